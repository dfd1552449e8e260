"""The standalone sandbox (`cw-billing-sync sandbox`) serves the same API over loopback."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from app.connectwise.client import ConnectWiseClient, CWCredentials

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def standalone() -> Iterator[str]:
    port = _free_port()
    with subprocess.Popen(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", "app.cli", "sandbox", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as process:
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=10)


async def test_client_talks_to_the_standalone_sandbox(standalone: str) -> None:
    creds = CWCredentials(
        site_url=standalone,
        company_id="sandbox",
        public_key="sandbox-public",
        private_key=SecretStr("sandbox-private"),
        client_id=SecretStr("any-client-id"),
    )
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(100):  # wait for the server to listen
            try:
                await http.get(f"{standalone}/login/companyinfo/sandbox")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        client = ConnectWiseClient(http, creds)
        info = await client.system_info()
        companies = await client.search_companies("Fabrikam")
    assert info.version
    assert [c.identifier for c in companies] == ["FABRIKAM"]
