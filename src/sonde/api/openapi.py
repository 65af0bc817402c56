"""The served ``/openapi.json``: FastAPI's document with the vendor's operations in it.

Existing clients and generators of Baseten's management API read its OpenAPI document,
so every vendor path+method that Sonde serves is described by the vendor's own operation
(parameters, request body, ``$ref``s to the vendor's schemas), not by FastAPI's rendering
of Sonde's handlers. Sonde's own routes (admin, inventory upserts, OTLP) keep FastAPI's
description. Vendor operations Sonde does not route are left out, so the document never
promises an endpoint that would answer 404.

The vendor document ships inside the package (``vendor_openapi.json``: the in-scope part
of the vendor's published spec, byte for byte); ``tests/test_openapi.py`` pins its sha256
and checks the served components against it (docs/api.md#openapi).
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from typing import Any

from fastapi import FastAPI

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


@lru_cache(maxsize=1)
def vendor_document() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath("vendor_openapi.json").read_text("utf-8"))


def merge(generated: dict[str, Any], vendor: dict[str, Any]) -> dict[str, Any]:
    """``generated`` with each vendor operation it also has replaced by the vendor's."""
    doc = copy.deepcopy(generated)
    vendor = copy.deepcopy(vendor)
    paths = doc.setdefault("paths", {})
    for path, vendor_item in vendor.get("paths", {}).items():
        item = paths.get(path)
        if item is None:
            continue
        served = [m for m in _METHODS if m in vendor_item and m in item]
        for method in served:
            item[method] = vendor_item[method]
        if served and "parameters" in vendor_item:
            # The vendor declares path parameters once per path item; the replaced
            # operations rely on them, and FastAPI's remaining ones repeat them harmlessly.
            item["parameters"] = vendor_item["parameters"]
    components = doc.setdefault("components", {})
    for section, entries in vendor.get("components", {}).items():
        # The vendor's definitions win: the replaced operations reference them by name.
        components.setdefault(section, {}).update(entries)
    if "security" in vendor:
        # Every Sonde route needs a key in the same header, so the scheme is global.
        doc["security"] = vendor["security"]
    return doc


def install(app: FastAPI) -> None:
    generate = app.openapi  # FastAPI's own, which regenerates when routes change
    merged: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        generated = generate()
        if merged.get("from") is not generated:
            merged["doc"] = merge(generated, vendor_document())
            merged["from"] = generated
        return merged["doc"]

    app.openapi = openapi  # type: ignore[method-assign]
