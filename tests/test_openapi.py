"""The served /openapi.json describes the vendor endpoints with the vendor's own operations."""

from __future__ import annotations

import hashlib

from spec_schema import VENDOR_SHA256, VENDOR_SPEC, openapi

from sonde.api.openapi import vendor_document

METHODS = ("get", "put", "post", "delete", "patch")


def served(client, path: str, method: str) -> bool:
    """Whether the app routes ``method path``: every vendor and Sonde route wants a key,
    so a routed one answers 401 to a keyless call where an unrouted one answers 404/405."""
    url = path.replace("{", "").replace("}", "")  # {model_id} -> model_id: any id will do
    return client.request(method.upper(), url, key=None).status_code == 401


def test_packaged_copy_is_the_vendor_spec():
    assert hashlib.sha256(VENDOR_SPEC.read_bytes()).hexdigest() == VENDOR_SHA256
    assert vendor_document() == openapi()


def test_vendor_operations_are_served_verbatim(client):
    r = client.get("/openapi.json", key=None)
    assert r.status_code == 200
    doc = r.json()
    vendor = openapi()
    replaced = set()
    for path, item in vendor["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            if served(client, path, method):
                assert doc["paths"][path][method] == item[method], (method, path)
                replaced.add((path, method))
                # Response and body schemas are the vendor's, by $ref into the vendor's components.
                schema = doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
                assert schema["$ref"].rsplit("/", 1)[1] in vendor["components"]["schemas"]
            else:
                assert method not in doc["paths"].get(path, {}), f"{method} {path} is described but not served"
        if any((path, m) in replaced for m in METHODS) and "parameters" in item:
            assert doc["paths"][path]["parameters"] == item["parameters"]
    # What this build serves of the vendor API today; later endpoints only add to it.
    assert {
        ("/v1/models", "get"), ("/v1/models/{model_id}", "get"), ("/v1/models/{model_id}/deployments", "get"),
        ("/v1/models/{model_id}/deployments/{deployment_id}", "get"),
        ("/v1/models/{model_id}/deployments/{deployment_id}/logs", "get"),
        ("/v1/models/{model_id}/deployments/{deployment_id}/logs", "post"),
        ("/v1/models/{model_id}/environments/{env_name}/logs", "get"),
    } <= replaced
    logs = doc["paths"]["/v1/models/{model_id}/deployments/{deployment_id}/logs"]
    assert logs["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"] == (
        "#/components/schemas/GetDeploymentLogsRequestV1")
    assert logs["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] == (
        "#/components/schemas/GetLogsResponseV1")


def test_components_security_and_sondes_own_routes(client):
    doc = client.get("/openapi.json", key=None).json()
    vendor = openapi()
    for section in ("schemas", "parameters", "securitySchemes"):
        for name, value in vendor["components"][section].items():
            assert doc["components"][section][name] == value, (section, name)
    assert doc["security"] == vendor["security"]
    # Every $ref in the document resolves.
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    for ref in refs:
        section, kind, name = ref.removeprefix("#/").split("/")
        assert name in doc[section][kind], ref


def test_sondes_own_routes_are_still_described(client):
    paths = client.get("/openapi.json", key=None).json()["paths"]
    own = [("post", "/v1/admin/workspaces"), ("post", "/v1/admin/workspaces/{workspace_id}/api_keys"),
           ("delete", "/v1/admin/api_keys/{key_id}"), ("put", "/v1/models/{model_id}"),
           ("put", "/v1/models/{model_id}/deployments/{deployment_id}")]
    assert all(method in paths[path] for method, path in own)
    for path in ("/v1/otlp/v1/metrics", "/v1/otlp/v1/logs"):
        if served(client, path, "post"):  # the OTLP receivers, once routed
            assert "post" in paths[path], path
