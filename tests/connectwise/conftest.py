from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import stamina

from app.connectwise.client import ConnectWiseClient
from app.connectwise.sandbox.app import Sandbox, SandboxTransport
from app.connectwise.sandbox.credentials import SANDBOX_CREDENTIALS
from tests.conftest import SHARED_DIR
from tests.spec_validation import SpecValidator, ValidatingTransport


@pytest.fixture
def spec_validator() -> SpecValidator | None:
    path = SHARED_DIR / "connectwise" / "openapi-subset.lenient.json"
    return SpecValidator(path) if SHARED_DIR.exists() else None


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox()


@pytest.fixture
def transport(sandbox: Sandbox, spec_validator: SpecValidator | None) -> Iterator[ValidatingTransport]:
    validating = ValidatingTransport(SandboxTransport(sandbox), spec_validator)
    yield validating
    if spec_validator is not None:
        assert spec_validator.problems == [], "\n".join(spec_validator.problems[:20])


@pytest.fixture
def fast_retries() -> Iterator[None]:
    """No real waiting between retries; the attempts cap stays as the client configures it."""
    with stamina.set_testing(True, attempts=8, cap=True):
        yield


@pytest.fixture
async def cw(transport: ValidatingTransport, fast_retries: None) -> AsyncIterator[ConnectWiseClient]:
    async with httpx.AsyncClient(transport=transport) as http:
        yield ConnectWiseClient(http, SANDBOX_CREDENTIALS, attempts=8)
