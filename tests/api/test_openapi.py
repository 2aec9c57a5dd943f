"""/v2/openapi.json covers every registered route with a schema for every body; /docs renders it offline."""

import json
import re
from pathlib import Path

import jsonschema_rs

from api.http import route_specs
from api.openapi import build, openapi_path


def resolve(doc: dict, ref: str) -> dict:
    assert ref.startswith("#/")
    node = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def refs(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


async def test_openapi_document_lists_every_route_with_schemas(api):
    reply = await api.call("GET", "/v2/openapi.json")
    assert reply.status == 200
    doc = reply.body
    json.dumps(doc)  # plain JSON
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"] and doc["info"]["version"]
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    for ref in refs(doc):  # every reference resolves
        resolve(doc, ref)
    specs = route_specs(api.runner.app)
    assert {(s.method, s.path) for s in specs} >= {
        ("GET", "/health"),
        ("GET", "/health/ready"),
        ("GET", "/v2/keys"),
        ("POST", "/v2/keys"),
        ("POST", "/v2/keys/{id}/revoke"),
        ("POST", "/v2/keys/{id}/rotate"),
        ("GET", "/v2/account"),
        ("GET", "/v2/openapi.json"),
        ("GET", "/docs"),
        ("POST", "/v2/test/things"),
    }
    ids = set()
    for spec in specs:
        op = doc["paths"][openapi_path(spec.path)][spec.method.lower()]
        ids.add(op["operationId"])
        assert op["x-scope"] == spec.scope and op["summary"]
        assert op["security"] == ([] if spec.scope is None else [{"bearer": []}])
        assert str(spec.status) in op["responses"]
        for name in re.findall(r"\{(\w+)\}", spec.path):
            assert {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} in op["parameters"]
        if spec.body is not None:
            schema = resolve(doc, op["requestBody"]["content"]["application/json"]["schema"]["$ref"])
            assert schema["type"] == "object" and schema["properties"]
            assert schema.get("additionalProperties") is False  # unknown fields are refused, and documented so
        if spec.scope is not None:
            assert op["responses"]["401"] == {"$ref": "#/components/responses/Unauthorized"}
            assert "Scope" in op["description"] or "Any valid key" in op["description"]
        if spec.scope is not None and spec.mutation:
            assert any(p["name"] == "Idempotency-Key" for p in op["parameters"])
            assert "409" in op["responses"]
    assert len(ids) == len(specs)
    error = resolve(doc, doc["components"]["responses"]["RateLimited"]["content"]["application/json"]["schema"]["$ref"])
    assert error["required"] == ["error"]
    listing = doc["paths"]["/v2/keys"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "starting_after"}
    page = resolve(doc, listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"])
    assert set(page["properties"]) == {"object", "data", "has_more"}


async def test_openapi_docs_page_is_local_html(api):
    reply = await api.call("GET", "/docs")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/html")
    page = reply.body
    assert page.startswith("<!doctype html>") and "</html>" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for text in ("/v2/keys/{id}/rotate", "calls:write", "Idempotency-Key", 'id="schema-CreateKey"', "invalid_param"):
        assert text in page


def test_openapi_holds_the_call_flow_verbs_and_the_example_validates():
    document = build([])
    schemas = document["components"]["schemas"]
    names = [ref["$ref"].rsplit("/", 1)[1] for ref in schemas["CallFlowInstructions"]["items"]["oneOf"]]
    verbs = ["Say", "Play", "Pause", "Gather", "Record", "Dial", "Stream", "Redirect", "Reject", "Hangup"]
    assert names == [f"CallFlow{verb}" for verb in verbs]
    menu = json.loads((Path(__file__).resolve().parents[2] / "examples" / "menu.json").read_text())
    schema = {"$ref": "#/components/schemas/CallFlowInstructions", "components": document["components"]}
    validator = jsonschema_rs.validator_for(schema)  # (schemathesis's validator, a dev dependency)
    assert validator.is_valid(menu)  # the example a user copies passes the published schema
    assert not validator.is_valid([{"verb": "dance"}]) and not validator.is_valid([{"verb": "say"}])
