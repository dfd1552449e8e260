"""Stories across months: a `World` per test, on the suite's database, with CW retries that do not wait."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import stamina
from fastapi import FastAPI

from tests.story import World


@pytest.fixture
def no_retry_waits() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


@pytest.fixture
async def world(app: FastAPI, no_retry_waits: None) -> AsyncIterator[World]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        yield World(app, http)
