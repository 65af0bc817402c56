"""OTLP in, rows out: decode (``decode``, ``proto``), place (``resource``), build rows
(``metrics``, ``logs``, ``columns``), cumulative -> delta (``cumulative``), queue on
the group commit (``pipeline``). The HTTP side is ``sonde.api.otlp``."""
