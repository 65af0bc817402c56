"""Sonde: self-hosted observability for ML model serving and training."""

from ._exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    SondeError,
    StoreError,
    Unauthorized,
)
from .settings import SETTINGS, Config, Setting

__version__ = "0.1.0"

__all__ = [
    "BadRequest",
    "Config",
    "Conflict",
    "Forbidden",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "SETTINGS",
    "Setting",
    "SondeError",
    "StoreError",
    "Unauthorized",
    "__version__",
]
