"""Validate responses against the vendor's JSON schemas.

The vendor document is the one the package ships and serves
(``sonde/api/vendor_openapi.json``, the in-scope part of the vendor's published
management API spec); ``VENDOR_SHA256`` pins its bytes, so an edit to the shipped copy
cannot silently move the schemas every test validates against (tests/test_openapi.py).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import jsonschema

VENDOR_SPEC = resources.files("sonde.api").joinpath("vendor_openapi.json")
#: sha256 of the vendor document as published, byte for byte.
VENDOR_SHA256 = "ff55da70e99dbd31f7557e3ce647efaf82b63b24c2192dc9443f65b9ae7d47a5"


@lru_cache(maxsize=1)
def openapi() -> dict:
    return json.loads(VENDOR_SPEC.read_bytes())


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
