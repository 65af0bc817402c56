"""The OpenTelemetry instruments SondeMiddleware records on, one set per meter provider."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

REQUEST_DURATION = "http.server.request.duration"
ACTIVE_REQUESTS = "http.server.active_requests"
REQUEST_BODY_SIZE = "http.server.request.body.size"
RESPONSE_BODY_SIZE = "http.server.response.body.size"
TIME_TO_FIRST_BYTE = "sonde.server.time_to_first_byte"

# Used only when no view overrides the aggregation (a provider not built by configure()):
# the semantic conventions' advice for durations, and decades for sizes, instead of the
# SDK's default buckets, which are millisecond-shaped.
DURATION_BOUNDARIES = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
SIZE_BOUNDARIES = (0, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)


class Instruments:
    """The instruments of one meter provider, shared by every middleware using it.

    Sharing matters for ``http.server.active_requests``: an SDK returns the already
    registered instrument for a second registration of the same name, so a second
    middleware's callback would be silently ignored.
    """

    def __init__(self, provider: MeterProvider) -> None:
        from .. import __version__

        meter = provider.get_meter("sonde.instrument", __version__)
        self.duration = meter.create_histogram(
            REQUEST_DURATION, unit="s", description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=DURATION_BOUNDARIES)
        self.ttfb = meter.create_histogram(
            TIME_TO_FIRST_BYTE, unit="s",
            description="Time from the start of a request to the first byte of its response body.",
            explicit_bucket_boundaries_advisory=DURATION_BOUNDARIES)
        self.request_size = meter.create_histogram(
            REQUEST_BODY_SIZE, unit="By", description="Size of HTTP server request bodies.",
            explicit_bucket_boundaries_advisory=SIZE_BOUNDARIES)
        self.response_size = meter.create_histogram(
            RESPONSE_BODY_SIZE, unit="By", description="Size of HTTP server response bodies.",
            explicit_bucket_boundaries_advisory=SIZE_BOUNDARIES)
        # In-flight requests are kept in a plain dict and observed at collection time: an
        # observable up-down counter exports the same non-monotonic sum as a synchronous
        # one, without two SDK calls (~6 us each) on every request.
        self._active: dict[tuple[str, str], int] = {}
        self._active_attrs: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()  # apps may serve from more than one thread
        meter.create_observable_up_down_counter(
            ACTIVE_REQUESTS, callbacks=[self._observe_active], unit="{request}",
            description="Number of active HTTP server requests.")

    def enter(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._active[key] = self._active.get(key, 0) + 1

    def leave(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._active[key] -= 1

    def _observe_active(self, options: CallbackOptions) -> list[Observation]:
        with self._lock:
            items = list(self._active.items())
        out = []
        for key, n in items:  # zero levels are reported too: "back to 0" is information
            attrs = self._active_attrs.get(key)
            if attrs is None:
                attrs = self._active_attrs[key] = {"http.request.method": key[0], "url.scheme": key[1]}
            out.append(Observation(n, attrs))
        return out


_by_provider: "weakref.WeakKeyDictionary[Any, Instruments]" = weakref.WeakKeyDictionary()
_by_provider_lock = threading.Lock()


def instruments_for(provider: MeterProvider | None) -> Instruments:
    # The global provider may still be the API's proxy here; instruments created on it
    # start recording once configure() (or anyone) sets the real provider.
    provider = provider if provider is not None else metrics.get_meter_provider()
    with _by_provider_lock:
        inst = _by_provider.get(provider)
        if inst is None:
            inst = _by_provider[provider] = Instruments(provider)
        return inst
