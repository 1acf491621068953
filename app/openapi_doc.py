"""Render the app's OpenAPI document as Markdown (`make openapi` writes openapi.md)."""

from __future__ import annotations

import json
import os
from typing import Any

from app.main import create_app
from app.settings import Settings

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def _schema_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"array of {_schema_name(schema.get('items', {}))}"
    if "anyOf" in schema:
        return " or ".join(_schema_name(s) for s in schema["anyOf"])
    return str(schema.get("type", "object"))


def render(spec: dict[str, Any]) -> str:
    info = spec["info"]
    lines = [
        f"# {info['title']} API (v{info['version']})",
        "",
        "Generated from the app by `make openapi`; do not edit by hand. "
        "Interactive docs: `/docs`; machine-readable: `/openapi.json`.",
        "",
        "| Method | Path | Summary |",
        "| --- | --- | --- |",
    ]
    operations = []
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                operations.append((path, method, item[method]))
    for path, method, op in operations:
        lines.append(f"| {method.upper()} | `{path}` | {op.get('summary', '')} |")
    for path, method, op in operations:
        lines += ["", f"## {method.upper()} `{path}`", "", op.get("summary", "")]
        if op.get("description"):
            lines += ["", op["description"].strip()]
        security = op.get("security")
        if security:
            lines += ["", "Auth: " + ", ".join(sorted({k for s in security for k in s}))]
        params = op.get("parameters", [])
        if params:
            lines += [
                "",
                "| Parameter | In | Type | Required | Description |",
                "| --- | --- | --- | --- | --- |",
            ]
            for p in params:
                schema = p.get("schema", {})
                lines.append(
                    f"| `{p['name']}` | {p['in']} | {_schema_name(schema)} | "
                    f"{'yes' if p.get('required') else 'no'} | "
                    f"{(p.get('description') or schema.get('description') or '').strip()} |"
                )
        body = op.get("requestBody", {}).get("content", {})
        for media, content in body.items():
            lines += ["", f"Request body ({media}): `{_schema_name(content.get('schema', {}))}`"]
        lines += ["", "| Status | Description | Body |", "| --- | --- | --- |"]
        for status, response in op.get("responses", {}).items():
            content = response.get("content", {})
            body_desc = ", ".join(
                f"`{_schema_name(c.get('schema', {}))}` ({m})" for m, c in content.items()
            )
            lines.append(f"| {status} | {response.get('description', '')} | {body_desc} |")
    schemas = spec.get("components", {}).get("schemas", {})
    if schemas:
        lines += ["", "## Schemas"]
        for name, schema in sorted(schemas.items()):
            lines += ["", f"### {name}", ""]
            if schema.get("description"):
                lines += [schema["description"].strip(), ""]
            props = schema.get("properties", {})
            required = set(schema.get("required", []))
            if props:
                lines += ["| Field | Type | Required | Description |", "| --- | --- | --- | --- |"]
                for field, prop in props.items():
                    desc = (prop.get("description") or "").replace("\n", " ").strip()
                    lines.append(
                        f"| `{field}` | {_schema_name(prop)} | "
                        f"{'yes' if field in required else 'no'} | {desc} |"
                    )
            elif "enum" in schema:
                lines.append("One of: " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"]))
    return "\n".join(lines) + "\n"


def generate() -> str:
    # A fixed, neutral configuration so the document does not depend on the local environment.
    os.environ.setdefault("APP_ENV", "development")
    app = create_app(Settings(mongodb_uri="mongodb://127.0.0.1:1/"))
    return render(app.openapi())


if __name__ == "__main__":
    print(generate(), end="")
