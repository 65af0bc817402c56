"""The ``sonde`` command line. Server commands run in process; every other command
is an HTTP client of a running server (chDB allows one process per data directory)."""
