"""Who is calling: the tenant and API client behind a verified access token."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    client_id: str

    @property
    def actor(self) -> str:
        """How the audit trail names this caller."""
        return f"client:{self.client_id}"
