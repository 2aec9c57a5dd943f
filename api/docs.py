"""`/docs`: the API reference as one plain HTML page, rendered here from the OpenAPI document (no CDN, no
JavaScript), so a self-hosted install documents itself even offline."""

from __future__ import annotations

from html import escape
from typing import Any

from aiohttp import web

from api.http import RouteTable
from api.openapi import document

routes = RouteTable()

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222 }
code, pre { font: 13px ui-monospace, monospace; background: #f4f4f4 }
pre { padding: .8em; white-space: pre-wrap }
table { border-collapse: collapse; margin: .5em 0 1em } td, th { border: 1px solid #ddd; padding: .25em .6em }
th { background: #fafafa; text-align: left } .op { border-top: 2px solid #ddd; margin-top: 2em }
.method { font-weight: bold; text-transform: uppercase } nav li { list-style: none }
"""


def _name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type(schema: dict[str, Any]) -> str:
    """A schema as a short, linked type expression (HTML)."""
    if "$ref" in schema:
        name = escape(_name(schema["$ref"]))
        return f'<a href="#schema-{name}">{name}</a>'
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{escape(str(v))}</code>" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return f"map of {_type(schema['additionalProperties'])}"
    text = escape(str(kind))
    limits = [f"{k} {schema[k]}" for k in ("minimum", "maximum", "minLength", "maxLength", "format") if k in schema]
    return text + (f" ({escape(', '.join(limits))})" if limits else "")


def _fields(schema: dict[str, Any]) -> str:
    props = schema.get("properties", {})
    if not props:
        return f"<p>{_type(schema)}</p>"
    required = set(schema.get("required", []))
    rows = []
    for name, prop in props.items():
        notes = escape(prop.get("description", ""))
        if "default" in prop:
            notes += f" (default <code>{escape(repr(prop['default']))}</code>)"
        rows.append(
            f"<tr><td><code>{escape(name)}</code></td><td>{_type(prop)}</td>"
            f"<td>{'yes' if name in required else 'no'}</td><td>{notes}</td></tr>"
        )
    return f"<table><tr><th>field</th><th>type</th><th>required</th><th>notes</th></tr>{''.join(rows)}</table>"


def _operation(method: str, path: str, op: dict[str, Any], doc: dict[str, Any]) -> str:
    anchor = escape(op["operationId"])
    out = [
        f'<section class="op" id="{anchor}"><h3><span class="method">{escape(method)}</span> '
        f"<code>{escape(path)}</code></h3><p><b>{escape(op.get('summary', ''))}</b></p>",
        "".join(f"<p>{escape(p)}</p>" for p in op.get("description", "").split("\n\n") if p),
    ]
    if op.get("parameters"):
        rows = "".join(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td><td>{_type(p['schema'])}</td>"
            f"<td>{'yes' if p.get('required') else 'no'}</td><td>{escape(p.get('description', ''))}</td></tr>"
            for p in op["parameters"]
        )
        out.append(
            "<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>required</th><th>notes</th></tr>"
            f"{rows}</table>"
        )
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        out.append(f"<h4>Body</h4><p>JSON {_type(schema)}</p>")
    rows = []
    for status, response in op["responses"].items():
        if "$ref" in response:
            response = doc["components"]["responses"][_name(response["$ref"])]
        content = next(iter(response.get("content", {}).items()), None)
        shape = "" if content is None else f"{escape(content[0])}: {_type(content[1]['schema'])}"
        rows.append(f"<tr><td>{escape(status)}</td><td>{escape(response['description'])}</td><td>{shape}</td></tr>")
    out.append(f"<h4>Responses</h4><table>{''.join(rows)}</table></section>")
    return "".join(out)


def render(doc: dict[str, Any]) -> str:
    """The whole reference page of an OpenAPI document."""
    info = doc["info"]
    ops = [(method.upper(), path, op) for path, item in doc["paths"].items() for method, op in item.items()]
    nav = "".join(
        f'<li><a href="#{escape(op["operationId"])}"><span class="method">{escape(m)}</span> {escape(p)}</a> '
        f"{escape(op.get('summary', ''))}</li>"
        for m, p, op in ops
    )
    schemas = "".join(
        f'<section id="schema-{escape(name)}"><h3>{escape(name)}</h3>{_fields(schema)}</section>'
        for name, schema in doc["components"]["schemas"].items()
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(info["title"])}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{escape(info['title'])} <small>{escape(info['version'])}</small>"
        f"</h1><pre>{escape(info.get('description', ''))}</pre>"
        '<p>Machine-readable: <a href="/v2/openapi.json">/v2/openapi.json</a> (OpenAPI 3.1).</p>'
        f"<h2>Operations</h2><nav><ul>{nav}</ul></nav>"
        f"{''.join(_operation(m, p, op, doc) for m, p, op in ops)}<h2>Schemas</h2>{schemas}</body></html>"
    )


@routes.route("GET", "/docs", scope=None, content_type="text/html", summary="This reference as HTML", tags=["meta"])
async def docs(request: web.Request) -> web.Response:
    """The OpenAPI document rendered as one HTML page."""
    return web.Response(text=render(document(request.app)), content_type="text/html")
