"""What the process owns and shares: settings, the engine, the session factory, crypto, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db.session import create_engine, create_sessionmaker
from app.metrics import Metrics
from app.security.encryption import SecretBox
from app.security.tokens import TokenIssuer
from app.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    tokens: TokenIssuer
    secrets: SecretBox
    metrics: Metrics = field(default_factory=Metrics)

    @classmethod
    def build(cls, settings: Settings, *, engine: AsyncEngine | None = None) -> AppContext:
        engine = engine or create_engine(settings.database_url)
        if settings.jwt_signing_key is None:
            raise ValueError("settings were not validated: JWT_SIGNING_KEY is missing")
        return cls(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            tokens=TokenIssuer(
                signing_key=settings.jwt_signing_key.get_secret_value(),
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                ttl_seconds=settings.token_ttl_seconds,
            ),
            secrets=SecretBox([k.get_secret_value() for k in settings.encryption_keys]),
        )
