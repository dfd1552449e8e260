"""Typed ConnectWise errors. Two levels: retryable (network, 429, 5xx) and permanent (other 4xx).

Messages carry CW's own `code`/`message` (they are what an MSP can act on) but never credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CWFieldError:
    code: str
    message: str
    field: str | None = None
    resource: str | None = None


class CWError(Exception):
    """Any failure talking to ConnectWise."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, errors: tuple[CWFieldError, ...] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.errors = errors

    def describe(self) -> str:
        """One line an MSP can act on: CW's message and each field problem."""
        parts = [self.message]
        parts += [f"{e.field}: {e.message}" if e.field else e.message for e in self.errors]
        return "; ".join(p for p in parts if p)


class CWRetryableError(CWError):
    """Transient: the same request may succeed later."""


class CWNetworkError(CWRetryableError):
    """No response. `outcome_unknown` is True when the request may have reached CW (read timeout, dropped
    connection): a create must then be looked up by its marker, never blindly re-sent."""

    def __init__(self, message: str, *, outcome_unknown: bool, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.outcome_unknown = outcome_unknown


class CWThrottledError(CWRetryableError):
    def __init__(self, message: str, *, retry_after: float | None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class CWServerError(CWRetryableError):
    pass


class CWPermanentError(CWError):
    """Sending the same request again will fail the same way."""


class CWValidationError(CWPermanentError):
    pass


class CWAuthError(CWPermanentError):
    pass


class CWForbiddenError(CWPermanentError):
    pass


class CWNotFoundError(CWPermanentError):
    pass


class CWConflictError(CWPermanentError):
    pass


class CWBudgetExceededError(CWRetryableError):
    """The tenant's request budget would be exceeded for longer than the caller is willing to wait."""


class CWConfigurationError(CWPermanentError):
    """The connection settings cannot work (bad site URL, codebase lookup failed)."""
