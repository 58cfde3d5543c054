"""The API's docs as one self-contained HTML page made from its OpenAPI document.

FastAPI's own docs page loads Swagger UI from a CDN; Hybrid Engine makes no request
beyond the configured providers, so the page is made here, with no script at all.
"""

from __future__ import annotations

import html
import json

METHODS = ("get", "post", "put", "patch", "delete")


def render(spec: dict) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(spec['info']['title'])} API</title>",
             "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "code,pre{font:13px ui-monospace,monospace}pre{background:#f4f4f4;padding:.6em;overflow:auto}"
             "h2{border-top:1px solid #ccc;padding-top:.6em;font-size:1.1em}</style></head><body>",
             f"<h1>{esc(spec['info']['title'])} {esc(spec['info']['version'])}</h1>",
             f"<p>{esc(spec['info'].get('description', ''))}</p>",
             "<p>The machine-readable description is <a href='openapi.json'>openapi.json</a>.</p>"]
    schemas = spec.get("components", {}).get("schemas", {})
    for path, ops in spec.get("paths", {}).items():
        for method in METHODS:
            op = ops.get(method)
            if op is None:
                continue
            parts.append(f"<h2><code>{method.upper()} {esc(path)}</code></h2><p>{esc(op.get('summary', ''))}</p>")
            params = [p for p in op.get("parameters", []) if p.get("in") == "query"]
            if params:
                parts.append("<p>Query: " + ", ".join(f"<code>{esc(p['name'])}</code>" for p in params) + "</p>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                parts.append("<p>Body (JSON):</p><pre>" + esc(_shape(body, schemas)) + "</pre>")
            ok = op.get("responses", {}).get("200") or op.get("responses", {}).get("201") or {}
            answer = ok.get("content", {}).get("application/json", {}).get("schema")
            if answer and "$ref" in answer:
                parts.append("<p>Answer (JSON):</p><pre>" + esc(_shape(answer, schemas)) + "</pre>")
    parts.append("<h2>Errors</h2><p>Every error is <code>{\"error\": {\"code\": ..., \"message\": ...}}</code> "
                 "with the native host's codes: bad_request 400, unauthorized 401, forbidden 403, not_found 404, "
                 "conflict 409, too_large 413, store_* and bad_config 503, internal 500.</p></body></html>")
    return "".join(parts)


def _shape(schema: dict, schemas: dict) -> str:
    ref = schema.get("$ref") or next((s.get("$ref") for s in schema.get("anyOf", []) if "$ref" in s), None)
    if ref:
        schema = schemas.get(ref.rsplit("/", 1)[-1], {})
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    lines = {name: f"{_type(p)}{'' if name in required else ' (optional)'}" for name, p in props.items()}
    return json.dumps(lines, indent=2)


def _type(p: dict) -> str:
    if "anyOf" in p:
        return " | ".join(_type(x) for x in p["anyOf"])
    if "$ref" in p:
        return p["$ref"].rsplit("/", 1)[-1]
    return p.get("type", "any")
