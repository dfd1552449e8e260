"""The sandbox's fixed credentials (DESIGN.md §7) and the address the in-process sandbox answers at."""

from __future__ import annotations

from pydantic import SecretStr

from app.connectwise.client import CWCredentials
from app.connectwise.sandbox.app import SANDBOX_COMPANY, SANDBOX_PRIVATE_KEY, SANDBOX_PUBLIC_KEY

# `.invalid` never resolves (RFC 2606): only the in-process transport can answer at this address.
IN_PROCESS_SITE = "https://sandbox.connectwise.invalid"

SANDBOX_CREDENTIALS = CWCredentials(
    site_url=IN_PROCESS_SITE,
    company_id=SANDBOX_COMPANY,
    public_key=SANDBOX_PUBLIC_KEY,
    private_key=SecretStr(SANDBOX_PRIVATE_KEY),
    client_id=SecretStr("00000000-0000-0000-0000-000000000000"),
)
