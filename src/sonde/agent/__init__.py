"""``sonde agent``: runs next to a model server and turns it into telemetry.

Modules, one concern each:

- ``supervisor`` (``run``) / ``watch`` (``watch``): where lines and the process come from
- ``logs``: one output line -> a log record (level, request_id, component)
- ``gpu``, ``process``, ``node``, ``hardware``: samplers and hardware identity; every OS
  boundary (NVML, psutil, the filesystem) is a constructor argument
- ``scrape``: ``--scrape`` targets (Prometheus pages), each on its own thread
- ``core``: the sampling loop, replica state, restart counter, resource attributes
- ``otlp``, ``export``, ``spool``: OTLP/HTTP protobuf, retries, the on-disk spool
- ``cli``: the click group

``docs/agent.md`` lists the flags, the metric names and the spool's guarantees.
"""
