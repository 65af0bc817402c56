"""``sonde demo``'s moving parts (the command itself is ``sonde/cli/demo.py``).

- ``model.py``: random-feature ridge regression in numpy, fitted at start-up, cached.
- ``model_server.py``: the FastAPI model server, with SondeMiddleware and ``configure()``.
- ``trainer.py``: one node of a numpy MLP training run (SGD, loss per step, checkpoints).
- ``chain.py``: the two chainlets, ``preprocess`` calling ``predict``, FastAPI apps.
- ``loops.py``: one node of the trainer (loops) deployment, a numpy policy trained by
  REINFORCE that serves samples over HTTP.
- ``textgen.py``: a toy text-generation service (numpy bigram model, OpenAI-style
  completions) publishing engine metrics under vLLM's names; it is not vLLM.
- ``serving.py``: what those servers share: logging, telemetry, ``/health``, uvicorn.
- ``loadgen.py``: Poisson traffic with bursts, a slow share, bad inputs and poison inputs,
  and shares sent to the chain and to the trainer nodes.
- ``stack.py``: starts ``sonde serve``, N ``sonde agent run`` replicas, the chain's, the
  training job's and the loops deployment's agents and the load generator as child
  processes, and stops them in order.

See docs/demo.md.
"""
