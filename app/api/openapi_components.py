"""Schemas that routes document by hand (raw-body routes) are added to the OpenAPI components here."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

_REF = "#/components/schemas/{model}"
_models: list[type[BaseModel]] = []


def register(model: type[BaseModel]) -> dict[str, str]:
    """Register `model` for the components section; returns its `$ref` for `openapi_extra`."""
    if model not in _models:
        _models.append(model)
    return {"$ref": _REF.format(model=model.__name__)}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in _models:
                schema = model.model_json_schema(ref_template=_REF)
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            _errors_are_problems(document)
            from app.api.docs import attach_examples

            attach_examples(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _errors_are_problems(document: dict[str, Any]) -> None:
    """Every error answer is RFC 9457 problem+json (422s included): say so in the document."""
    from app.api.problems import PROBLEM_JSON, Problem

    schemas = document["components"]["schemas"]
    schemas.setdefault("Problem", Problem.model_json_schema(ref_template=_REF))
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    problem = {PROBLEM_JSON: {"schema": {"$ref": _REF.format(model="Problem")}}}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if "requestBody" in operation:  # a body that cannot even be decoded
                operation["responses"].setdefault("400", {"description": "Malformed request body"})
            for status, response in operation.get("responses", {}).items():
                if str(status)[0] in "45":
                    response["content"] = problem
                    if str(status) == "422" and response.get("description") == "Validation Error":
                        response["description"] = "Invalid request (the problem lists each invalid field)"
