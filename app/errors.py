"""One error tree. Every expected failure is an `AppError` rendered as RFC 9457 problem+json; a 500 is a bug."""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra or {}
        self.headers = headers or {}


class NotAuthenticatedError(AppError):
    status = 401
    code = "not_authenticated"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="cw-billing-sync"'})
        super().__init__(detail, **kwargs)


class InvalidClientError(AppError):
    status = 401
    code = "invalid_client"
    title = "Unknown client or wrong secret"


class UnsupportedGrantTypeError(AppError):
    status = 400
    code = "unsupported_grant_type"
    title = "Only the client_credentials grant is supported"


class NotFoundError(AppError):
    status = 404
    code = "not_found"
    title = "Not found"


class ConflictError(AppError):
    status = 409
    code = "conflict"
    title = "Conflict"


class UnprocessableError(AppError):
    status = 422
    code = "unprocessable"
    title = "The request cannot be applied"


class PayloadTooLargeError(AppError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class WebhookSignatureError(AppError):
    status = 401
    code = "invalid_signature"
    title = "Webhook signature rejected"
