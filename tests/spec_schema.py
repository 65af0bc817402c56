"""Validate responses against the vendor's JSON schemas in management-openapi.json."""

from __future__ import annotations

import json
import pathlib
from functools import lru_cache

import jsonschema

SPEC_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "spec" / "baseten"


@lru_cache(maxsize=1)
def openapi() -> dict:
    return json.loads((SPEC_DIR / "management-openapi.json").read_text())


@lru_cache(maxsize=None)
def _validator(name: str) -> jsonschema.protocols.Validator:
    doc = openapi()
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    cls = jsonschema.validators.validator_for({"$schema": "https://json-schema.org/draft/2020-12/schema"})
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate(body: object, schema_name: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``body`` matches the named schema."""
    _validator(schema_name).validate(body)


def response_schema(method: str, path: str) -> str:
    """Name of the 200 response schema of ``method path`` (a path template of the spec)."""
    op = openapi()["paths"][path][method.lower()]
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[1]
