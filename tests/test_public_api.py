import pytest

import sonde
import sonde.instrument


@pytest.mark.parametrize("module", [sonde, sonde.instrument], ids=lambda m: m.__name__)
def test_all_names_exist_and_are_sorted(module):
    assert sorted(module.__all__) == list(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), name


def test_exception_tree_matches_the_docstring():
    import sonde._exceptions as ex

    for name in ("BadRequest", "PayloadTooLarge", "Unauthorized", "Forbidden", "NotFound", "Conflict", "Overloaded", "StoreError"):
        cls = getattr(ex, name)
        assert issubclass(cls, sonde.SondeError)
        assert f"{name} " in ex.__doc__ and str(cls.status) in ex.__doc__
    assert issubclass(sonde.PayloadTooLarge, sonde.BadRequest)
