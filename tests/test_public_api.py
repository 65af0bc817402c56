import sonde


def test_all_names_exist_and_are_sorted():
    assert sorted(sonde.__all__) == list(sonde.__all__)
    for name in sonde.__all__:
        assert hasattr(sonde, name), name


def test_exception_tree_matches_the_docstring():
    import sonde._exceptions as ex

    for name in ("BadRequest", "PayloadTooLarge", "Unauthorized", "Forbidden", "NotFound", "Conflict", "Overloaded", "StoreError"):
        cls = getattr(ex, name)
        assert issubclass(cls, sonde.SondeError)
        assert f"{name} " in ex.__doc__ and str(cls.status) in ex.__doc__
    assert issubclass(sonde.PayloadTooLarge, sonde.BadRequest)
