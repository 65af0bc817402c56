"""Instrument a Starlette/FastAPI model server for Sonde.

    from sonde.instrument import SondeMiddleware, configure

    telemetry = configure()                 # SONDE_SERVER, SONDE_API_KEY, SONDE_DEPLOYMENT_ID...
    # FastAPI's own HTTP metrics would double count, its own server spans double list
    app = FastAPI(telemetry={"metrics": False, "tracing": False})
    ...
    app = SondeMiddleware(app)              # records on the global providers configure() set

See docs/instrument.md.
"""

from .asgi import SondeMiddleware
from .otel import SondeTelemetry, configure, sonde_views
from .request_id import RequestIdFilter, current_request_id, install_log_filter, request_id_var

__all__ = [
    "RequestIdFilter",
    "SondeMiddleware",
    "SondeTelemetry",
    "configure",
    "current_request_id",
    "install_log_filter",
    "request_id_var",
    "sonde_views",
]
