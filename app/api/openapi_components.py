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
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
