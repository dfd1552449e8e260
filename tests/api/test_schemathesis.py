"""Schemathesis over the whole exported OpenAPI document, against a real server with two tenants' tokens:
no 5xx, and every response matches what the document declares (status, content type, schema)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from app.context import AppContext
from tests.api.setup_helpers import configured_tenant, mapped_company
from tests.conftest import TEST_ENCRYPTION_KEY, TEST_SIGNING_KEY, TenantFactory

ROOT = Path(__file__).resolve().parents[2]
schema = schemathesis.openapi.from_path(ROOT / "openapi" / "openapi.json")
TOKENS: dict[str, str] = {}
SERVER: dict[str, str] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(database_url: str, tmp_dir: Path) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "APP_ENV": "production",
        "DATABASE_URL": database_url,
        "JWT_SIGNING_KEY": TEST_SIGNING_KEY,
        "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "RUN_WORKER": "false",
        "LOG_LEVEL": "WARNING",
        "DATA_DIR": str(tmp_dir),
    }
    with subprocess.Popen(  # noqa: S603 (our own server)
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as process:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        try:
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
async def two_tenants(server: str, make_tenant: TenantFactory, ctx: AppContext) -> None:
    """Tenant A fully set up (connection to the in-process sandbox, product, a mapped company); tenant B owns a
    company with the same portal id. The fuzzer runs with A's token and then B's."""
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        for name in ("A", "B"):
            tenant = await make_tenant(name)
            headers = await configured_tenant(http, tenant)
            await mapped_company(http, tenant, headers, ctx=ctx)
            TOKENS[name] = headers["Authorization"]
    SERVER["url"] = server


@schema.parametrize()
# Deterministic examples: CI must not turn red on a new random draw (explore with derandomize=False locally).
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, two_tenants: None) -> None:  # type: ignore[type-arg]
    for token in TOKENS.values():
        # Every check except the two about input acceptance: negative-data rejection also flags unknown (ignored)
        # query parameters such as `?=`, and positive-data acceptance cannot know that a well-formed id does not
        # exist in ConnectWise (a correct 4xx). No 5xx, and every response as documented, stay required.
        case.call_and_validate(
            base_url=SERVER["url"],
            headers={"Authorization": token},
            excluded_checks=[schemathesis.checks.negative_data_rejection, schemathesis.checks.positive_data_acceptance],
        )
