"""Checks each HTTP exchange between the client and the sandbox against ConnectWise's OpenAPI subset.

Requests: the operation exists, required headers (clientId) are sent, path and query parameters are declared and
typed, the JSON body matches the schema. Responses: a 2xx status and media type the operation declares, the body
matches its schema; errors (the spec declares none) match CW's error body or its rate-limit body.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

_BASE = "urn:cw-spec"
_ERROR_SCHEMAS = [
    {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "errors": {"type": "array", "nullable": True, "items": {"type": "object"}},
        },
    },
    {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    },
]


@dataclass
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]
    parameters: list[dict[str, Any]]


@lru_cache(maxsize=2)
def _load(path: Path) -> tuple[dict[str, Any], Registry[Any], list[Operation]]:
    """The spec, parsed once per process (every test builds a validator)."""
    document = json.loads(path.read_text())
    registry: Registry[Any] = Registry().with_resource(
        _BASE, Resource.from_contents(document, default_specification=DRAFT4)
    )
    operations: list[Operation] = []
    for template, item in document["paths"].items():
        regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
        for method, op in item.items():
            if method == "parameters":
                continue
            params = [*item.get("parameters", []), *op.get("parameters", [])]
            operations.append(Operation(method.upper(), template, re.compile(regex), op, params))
    # Literal segments win over parameters (/finance/agreements/types before /finance/agreements/{id}).
    operations.sort(key=lambda o: o.template.count("{"))
    return document, registry, operations


@dataclass
class SpecValidator:
    path: Path
    problems: list[str] = field(default_factory=list)
    checked: int = 0

    def __post_init__(self) -> None:
        self.document, self.registry, self.operations = _load(self.path)

    def _schema_errors(self, schema: dict[str, Any], instance: Any) -> list[str]:
        resolved = self._deref(schema)
        validator = OAS30Validator(resolved, registry=self.registry, format_checker=oas30_format_checker)
        return [
            f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"[:300] for e in validator.iter_errors(instance)
        ]

    def _deref(self, schema: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in schema and schema["$ref"].startswith("#/"):
            return {"$ref": _BASE + schema["$ref"]}
        if schema.get("type") == "array" and "$ref" in schema.get("items", {}):
            return {**schema, "items": self._deref(schema["items"])}
        return schema

    def _find(self, method: str, api_path: str) -> tuple[Operation, dict[str, str]] | None:
        for op in self.operations:
            match = op.pattern.match(api_path)
            if op.method == method and match:
                return op, match.groupdict()
        return None

    def check(self, request: httpx.Request, response: httpx.Response | None) -> None:
        url = request.url
        if "/apis/3.0" not in url.path:
            return  # the codebase lookup (/login/companyinfo) is outside the REST API spec
        api_path = url.path.split("/apis/3.0", 1)[1]
        where = f"{request.method} {api_path}"
        found = self._find(request.method, api_path)
        if found is None:
            self.problems.append(f"{where}: no such operation in the spec")
            return
        self.checked += 1
        op, path_params = found
        self._check_request(where, op, path_params, request)
        if response is not None:
            self._check_response(where, op, response)

    def _check_request(self, where: str, op: Operation, path_params: dict[str, str], request: httpx.Request) -> None:
        declared = {(p["in"], p["name"]): p for p in op.parameters}
        for (location, name), param in declared.items():
            if location == "header" and param.get("required") and name not in request.headers:
                self.problems.append(f"{where}: required header {name} missing")
        for name, value in path_params.items():
            path_param = declared.get(("path", name))
            if path_param and path_param["schema"].get("type") == "integer" and not value.isdigit():
                self.problems.append(f"{where}: path parameter {name}={value!r} is not an integer")
        for name, value in request.url.params.multi_items():
            query_param = declared.get(("query", name))
            if query_param is None:
                self.problems.append(f"{where}: query parameter {name} is not declared")
            elif query_param["schema"].get("type") == "integer" and not value.lstrip("-").isdigit():
                self.problems.append(f"{where}: query parameter {name}={value!r} is not an integer")
        body_spec = op.spec.get("requestBody")
        if body_spec is None:
            if request.content:
                self.problems.append(f"{where}: sends a body the operation does not take")
            return
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        media = body_spec["content"].get(content_type)
        if media is None:
            self.problems.append(f"{where}: request media type {content_type!r} not declared")
            return
        body = json.loads(request.content)
        self.problems += [f"{where} request body {e}" for e in self._schema_errors(media["schema"], body)]

    def _check_response(self, where: str, op: Operation, response: httpx.Response) -> None:
        status = response.status_code
        if status >= 400:
            body = response.json()
            if not any(not self._schema_errors(s, body) for s in _ERROR_SCHEMAS):
                self.problems.append(f"{where}: error body {body!r} is not a CW error shape")
            return
        declared = op.spec.get("responses", {}).get(str(status))
        if declared is None:
            self.problems.append(f"{where}: status {status} not declared")
            return
        if status == 204 or not declared.get("content"):
            return
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        schemas = {k.split(";")[0].strip(): v["schema"] for k, v in declared["content"].items()}
        if media_type not in schemas:
            self.problems.append(f"{where}: response media type {media_type!r} not declared")
            return
        errors = self._schema_errors(schemas[media_type], response.json())
        self.problems += [f"{where} response {e}" for e in errors[:5]]


class ValidatingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, validator: SpecValidator | None) -> None:
        self._inner = inner
        self.validator = validator
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError:
            if self.validator:
                self.validator.check(request, None)
            raise
        await response.aread()
        if self.validator:
            self.validator.check(request, response)
        return response
