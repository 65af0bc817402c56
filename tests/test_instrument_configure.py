"""configure(): settings from arguments and environment, the resource, the log handler.

Its export path is covered end to end in test_instrument_e2e.py; here nothing is
exported (no measurement is taken), so an unreachable server is fine.
"""

from __future__ import annotations

import logging

import pytest

from sonde.instrument import RequestIdFilter, configure, request_id_var

UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens, and nothing is sent

ENV = ("SONDE_SERVER", "SONDE_API_KEY", "SONDE_MODEL_ID", "SONDE_DEPLOYMENT_ID", "SONDE_REPLICA",
       "SONDE_ENVIRONMENT", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_environment_fills_what_arguments_leave_out(monkeypatch):
    monkeypatch.setenv("SONDE_SERVER", UNREACHABLE)
    monkeypatch.setenv("SONDE_API_KEY", "ingest-key")
    monkeypatch.setenv("SONDE_MODEL_ID", "m-env")
    monkeypatch.setenv("SONDE_DEPLOYMENT_ID", "d-env")
    monkeypatch.setenv("SONDE_ENVIRONMENT", "staging")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=ml,sonde.replica=r-otel")
    t = configure(deployment_id="d-arg", set_global=False, logs=False)
    try:
        attrs = dict(t.resource.attributes)
        assert attrs["sonde.model_id"] == "m-env" and attrs["sonde.deployment_id"] == "d-arg"
        assert attrs["sonde.environment"] == "staging" and attrs["team"] == "ml"
        assert attrs["sonde.replica"] == "r-otel"
        assert t.logger_provider is None and t.log_handler is None
    finally:
        t.shutdown()


def test_without_a_replica_each_process_is_its_own_instance():
    # Sonde's replica fallback; the SDK makes it a UUID per process, renewed after fork.
    ids = set()
    for _ in range(2):
        t = configure(server=UNREACHABLE, api_key="k", deployment_id="d1", set_global=False, logs=False)
        ids.add(t.resource.attributes["service.instance.id"])
        assert "sonde.replica" not in t.resource.attributes
        t.shutdown()
    assert len(ids) == 1 and len(ids.pop()) == 36


@pytest.mark.parametrize("kwargs, message", [
    ({"api_key": "k", "deployment_id": "d"}, "SONDE_SERVER"),
    ({"server": UNREACHABLE, "deployment_id": "d"}, "SONDE_API_KEY"),
    ({"server": UNREACHABLE, "api_key": "k", "model_id": "m"}, "SONDE_DEPLOYMENT_ID"),
])
def test_missing_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        configure(set_global=False, logs=False, **kwargs)


def test_other_placements_are_accepted():
    t = configure(server=UNREACHABLE, api_key="k", set_global=False, logs=False,
                  resource_attributes={"sonde.training_project_id": "p", "sonde.training_job_id": "j"})
    t.shutdown()


def test_log_handler_on_root_with_request_ids(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.WARNING)
    before = list(root.handlers)
    t = configure(server=UNREACHABLE, api_key="k", deployment_id="d1", set_global=False, log_level=logging.INFO)
    try:
        handler = t.log_handler
        assert handler in root.handlers and root.level == logging.INFO
        assert any(isinstance(f, RequestIdFilter) for f in handler.filters)

        def passes(name: str, rid: str | None) -> tuple[bool, str | None]:
            record = logging.LogRecord(name, logging.INFO, __file__, 1, "msg", None, None)
            token = request_id_var.set(rid)
            try:
                return bool(handler.filter(record)), getattr(record, "request_id", None)
            finally:
                request_id_var.reset(token)

        assert passes("app", "rid-1") == (True, "rid-1")
        assert passes("app", None) == (True, None)  # no placeholder in exported attributes
        assert passes("opentelemetry.exporter.otlp", "rid-2")[0] is False
    finally:
        t.shutdown()
    assert root.handlers == before
