"""What the process owns and shares: settings, the engine, the session factory, crypto, metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.clock import Clock
from app.connectwise.budget import BudgetRegistry, Budgets
from app.connectwise.client import DEFAULT_TIMEOUT, CodebaseCache
from app.connectwise.network import guarded_client
from app.connectwise.schemas import BillingCycle
from app.db.budget import SharedBudgets
from app.db.session import create_engine, create_sessionmaker
from app.metrics import Metrics
from app.security.encryption import SecretBox
from app.security.tokens import TokenIssuer
from app.services.intake_queue import IntakeQueue
from app.services.tenants import WebhookSecretCache
from app.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    tokens: TokenIssuer
    secrets: SecretBox
    cw_http: httpx.AsyncClient
    budgets: Budgets
    clock: Clock = field(default_factory=Clock.real)
    # Sites answered by a transport mounted at start-up (`cw_http`'s mounts) rather than the network: they need no
    # DNS and pass the SSRF check as they are.
    cw_mounted_sites: frozenset[str] = frozenset()
    metrics: Metrics = field(default_factory=Metrics)
    codebases: CodebaseCache = field(default_factory=CodebaseCache)
    # Billing cycles per tenant (a CW setup table); cleared by the periodic full reconcile.
    billing_cycles: dict[str, dict[int, BillingCycle]] = field(default_factory=dict)
    # Decrypted portal secrets (decrypted with whatever `secrets` holds at the time) and the webhook group commit.
    webhook_secrets: WebhookSecretCache = field(init=False)
    intake: IntakeQueue = field(init=False)
    read_sessionmaker: async_sessionmaker[AsyncSession] = field(init=False)  # GET requests: never queue behind writes

    def __post_init__(self) -> None:
        self.read_sessionmaker = create_sessionmaker(self.engine, read_only=True)
        self.webhook_secrets = WebhookSecretCache(lambda: self.secrets)
        self.intake = IntakeQueue(self.engine, self.metrics)

    def now(self) -> datetime:
        """Now, for billing and scheduling: the business clock (real time, or PIN_NOW's moment running on)."""
        return self.clock.now()

    async def aclose(self) -> None:
        await self.intake.aclose()
        await self.cw_http.aclose()

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        engine: AsyncEngine | None = None,
        clock: Clock | None = None,
        cw_mounts: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    ) -> AppContext:
        """`cw_mounts`: transports that answer for whole CW sites (start-up mounts the in-process sandbox here)."""
        engine = engine or create_engine(settings.database_url)
        clock = clock or Clock.for_settings(settings.pin_now)
        mounts = dict(cw_mounts or {})
        if settings.jwt_signing_key is None:
            raise ValueError("settings were not validated: JWT_SIGNING_KEY is missing")
        return cls(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            tokens=TokenIssuer(
                signing_key=settings.jwt_signing_key,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                ttl_seconds=settings.token_ttl_seconds,
            ),
            secrets=SecretBox([k.get_secret_value() for k in settings.encryption_keys]),
            # Every connection checked and pinned (SSRF); redirects never followed.
            cw_http=guarded_client(
                allow_private=settings.cw_allow_private_sites, timeout=DEFAULT_TIMEOUT, mounts=mounts
            ),
            # Shared by every process on PostgreSQL; SQLite runs one process.
            budgets=(
                SharedBudgets(engine, settings.cw_requests_per_minute)
                if engine.dialect.name == "postgresql"
                else BudgetRegistry(settings.cw_requests_per_minute)
            ),
            clock=clock,
            cw_mounted_sites=frozenset(mounts),
        )
