"""Configuration: one `Settings` object read from environment variables (and an optional `.env`).

Every secret is a `SecretStr` so it never shows up in a repr or a log line. In `dev` mode, secrets that are not set
are generated once and kept in `DATA_DIR/dev-secrets.json` so that the quick start needs no configuration; in
`production` a missing, short or placeholder secret stops the service at start-up with a message that says which.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SIGNING_KEY_BYTES = 32
MAX_TOKEN_TTL_SECONDS = 15 * 60
# Values people paste from examples. Refused whatever their length.
_PLACEHOLDERS = ("changeme", "change-me", "change_me", "secret", "password", "example", "placeholder", "xxxx")


class Environment(StrEnum):
    dev = "dev"
    production = "production"


class ConfigurationError(RuntimeError):
    """The service cannot start with this configuration; the message says what to fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    app_env: Environment = Field(default=Environment.dev, description="`dev` or `production`.")
    database_url: str = Field(
        default="sqlite+aiosqlite:///./var/cw-billing-sync.db",
        description="SQLAlchemy async URL: `sqlite+aiosqlite:///…` or `postgresql+asyncpg://…`.",
    )
    data_dir: Path = Field(default=Path("./var"), description="Where dev mode keeps its generated secrets.")
    jwt_signing_key: SecretStr | None = Field(default=None, description="HS256 key, at least 32 bytes.")
    jwt_issuer: str = "cw-billing-sync"
    jwt_audience: str = "cw-billing-sync-api"
    token_ttl_seconds: int = Field(default=600, ge=60, le=MAX_TOKEN_TTL_SECONDS)
    # Comma-separated base64url 32-byte keys, newest first: the first encrypts, all decrypt.
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    webhook_secret_grace_hours: int = Field(default=24, ge=0, le=24 * 30)
    cw_sandbox: bool = Field(
        default=True,
        description="Serve an in-process ConnectWise sandbox at https://sandbox.connectwise.invalid (dev/demo).",
    )
    cw_allow_private_sites: bool = Field(
        default=False,
        description="Allow http:// and loopback/private CW site URLs (the standalone sandbox). Dev only.",
    )
    cw_requests_per_minute: int = Field(
        default=1000, ge=1, le=100_000, description="Per-tenant ConnectWise request budget of this process."
    )
    cw_api_version: str = Field(default="2025.16", pattern=r"^\d{4}\.\d{1,2}$")
    pin_now: datetime | None = Field(
        default=None,
        description="Dev/demo only: the moment billing treats as now (reproducible demos). Refused in production.",
    )
    run_worker: bool = Field(default=True, description="Run the sync worker inside the API process.")
    full_reconcile_hours: float = Field(
        default=6.0, gt=0, le=24 * 7, description="How often every mapped company is reconciled in full."
    )
    otel_enabled: bool = Field(
        default=False,
        description="FastAPI's built-in OpenTelemetry spans and metrics, for a process with an OpenTelemetry SDK "
        "configured. Off by default: the service reports through /metrics and its logs, and the check costs every "
        "request.",
    )
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: int = 8000

    @field_validator("encryption_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def log_as_json(self) -> bool:
        if self.log_format == "auto":
            return self.app_env is Environment.production
        return self.log_format == "json"


def _looks_like_placeholder(value: str) -> bool:
    lowered = value.lower()
    if len(set(value)) < 8:  # "aaaaaaaa…", "0000…": long but not a key
        return True
    return any(word in lowered for word in _PLACEHOLDERS)


def validate_secrets(settings: Settings) -> None:
    """Refuse to start with a signing key or encryption key that would make tokens or secrets guessable."""
    key = settings.jwt_signing_key
    if key is None:
        raise ConfigurationError("JWT_SIGNING_KEY is not set; generate one with: openssl rand -base64 48")
    raw = key.get_secret_value()
    if len(raw.encode()) < MIN_SIGNING_KEY_BYTES:
        raise ConfigurationError(
            f"JWT_SIGNING_KEY is {len(raw.encode())} bytes; at least {MIN_SIGNING_KEY_BYTES} are required "
            "(generate one with: openssl rand -base64 48)"
        )
    if _looks_like_placeholder(raw):
        raise ConfigurationError("JWT_SIGNING_KEY looks like a placeholder; set a random value")
    if settings.app_env is Environment.production and settings.pin_now is not None:
        raise ConfigurationError("PIN_NOW is for demos in dev mode only")
    if settings.pin_now is not None and settings.pin_now.tzinfo is None:
        raise ConfigurationError("PIN_NOW needs a timezone, e.g. 2026-11-25T12:00:00Z")
    if settings.app_env is Environment.production and settings.cw_allow_private_sites:
        raise ConfigurationError("CW_ALLOW_PRIVATE_SITES is for dev mode only; it disables the SSRF guard")
    if not settings.encryption_keys:
        raise ConfigurationError("ENCRYPTION_KEYS is not set; generate one with: cw-billing-sync keys generate")
    # Imported here: settings must stay importable without the crypto stack for the CLI's help text.
    from app.security.encryption import parse_key

    for index, enc_key in enumerate(settings.encryption_keys):
        try:
            parse_key(enc_key.get_secret_value())
        except ValueError as exc:
            raise ConfigurationError(f"ENCRYPTION_KEYS entry {index + 1} is invalid: {exc}") from None


def _fill_dev_secrets(settings: Settings) -> Settings:
    """Dev mode only: generate missing secrets once and keep them in DATA_DIR so tokens survive restarts."""
    from app.security.encryption import generate_key

    path = settings.data_dir / "dev-secrets.json"
    stored: dict[str, str] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    changed = False
    if "jwt_signing_key" not in stored:
        stored["jwt_signing_key"] = secrets.token_urlsafe(48)
        changed = True
    if "encryption_key" not in stored:
        stored["encryption_key"] = generate_key()
        changed = True
    if changed:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(stored, handle)
    update: dict[str, object] = {}
    if settings.jwt_signing_key is None:
        update["jwt_signing_key"] = SecretStr(stored["jwt_signing_key"])
    if not settings.encryption_keys:
        update["encryption_keys"] = [SecretStr(stored["encryption_key"])]
    return settings.model_copy(update=update) if update else settings


def load_settings(**overrides: object) -> Settings:
    """Read, complete (dev mode) and validate the settings. Raises `ConfigurationError` with a readable reason."""
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if settings.app_env is Environment.dev:
        settings = _fill_dev_secrets(settings)
    validate_secrets(settings)
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
