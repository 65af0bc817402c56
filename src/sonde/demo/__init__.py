"""``sonde demo``'s moving parts (the command itself is ``sonde/cli/demo.py``).

- ``model.py``: random-feature ridge regression in numpy, fitted at start-up, cached.
- ``model_server.py``: the FastAPI model server, with SondeMiddleware and ``configure()``.
- ``loadgen.py``: Poisson traffic with bursts, a slow share, bad inputs and poison inputs.
- ``stack.py``: starts ``sonde serve``, N ``sonde agent run`` replicas and the load
  generator as child processes, and stops them in order.

See docs/demo.md.
"""
