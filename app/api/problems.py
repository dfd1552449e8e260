"""RFC 9457 problem+json for every error: AppError, validation (422), unknown routes, and the unexpected (500)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import AppError
from app.logging import get_logger

PROBLEM_JSON = "application/problem+json"
log = get_logger(__name__)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    code: str
    errors: list[dict[str, Any]] | None = None


def problem_response(
    request: Request,
    *,
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://cw-billing-sync.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "code": code,
        **extra,
    }
    return JSONResponse(jsonable_encoder(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def error_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route, so the document lists the problems it can answer with."""
    out: dict[int | str, dict[str, Any]] = {}
    for err in errors:
        line = f"`{err.code}`: {err.title}"
        entry = out.setdefault(err.status, {"model": Problem, "description": line})
        if line not in entry["description"].split("; "):
            entry["description"] = f"{entry['description']}; {line}"
        entry["content"] = {PROBLEM_JSON: {}}
    return out


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return problem_response(
            request,
            status=exc.status,
            code=exc.code,
            title=exc.title,
            detail=exc.detail,
            headers=exc.headers,
            **exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        return problem_response(
            request,
            status=422,
            code="validation_error",
            title="Invalid request",
            detail=summary,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        detail = exc.detail if isinstance(exc.detail, str) else None
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}
        if exc.status_code == 405:
            # Several routes may serve one path; Starlette names only the first one's methods.
            headers["Allow"] = ", ".join(allowed_methods(app, request.url.path))
        return problem_response(request, status=exc.status_code, code=code, title=title, detail=detail, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("http.unhandled_error", error_type=type(exc).__name__, exc_info=exc)
        return problem_response(
            request,
            status=500,
            code="internal_error",
            title="Internal server error",
            detail="An unexpected error occurred; it has been logged.",
        )


def install_connectwise_handlers(app: FastAPI) -> None:
    """ConnectWise failures seen by an API call: CW's own message, so the MSP can act on it."""
    from app.connectwise.errors import (
        CWError,
        CWNotFoundError,
        CWRetryableError,
        CWThrottledError,
        CWValidationError,
    )

    @app.exception_handler(CWError)
    async def _cw_error(request: Request, exc: CWError) -> JSONResponse:
        errors = [{"field": e.field, "code": e.code, "message": e.message} for e in exc.errors] or None
        if isinstance(exc, CWRetryableError):
            retry = exc.retry_after if isinstance(exc, CWThrottledError) and exc.retry_after else 30
            return problem_response(
                request,
                status=503,
                code="cw_unavailable",
                title="ConnectWise is unavailable or throttling; try again later",
                detail=exc.describe(),
                headers={"Retry-After": str(int(retry))},
            )
        if isinstance(exc, CWNotFoundError):
            return problem_response(
                request, status=404, code="cw_not_found", title="Not found in ConnectWise", detail=exc.describe()
            )
        code = "cw_validation" if isinstance(exc, CWValidationError) else "cw_rejected"
        return problem_response(
            request,
            status=424,
            code=code,
            title="ConnectWise rejected the request",
            detail=exc.describe(),
            cw_status=exc.status,
            errors=errors,
        )


CW_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    424: {
        "model": Problem,
        "description": "ConnectWise rejected the request (its message is in detail)",
        "content": {PROBLEM_JSON: {}},
    },
    503: {"model": Problem, "description": "ConnectWise is unavailable or throttling", "content": {PROBLEM_JSON: {}}},
}


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every documented method of the path template that matches `path`."""
    methods: set[str] = set()
    for template, operations in app.openapi().get("paths", {}).items():
        pattern = "^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            methods |= {m.upper() for m in operations}
    return sorted(methods)
