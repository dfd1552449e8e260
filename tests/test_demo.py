"""The demo walks the whole story and exits green; its printed agreement shows what an MSP checks."""

from __future__ import annotations

import io
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from app.demo import run_demo
from app.settings import Environment, load_settings
from tests.conftest import TEST_ENCRYPTION_KEY, TEST_SIGNING_KEY


async def test_demo_runs_green_and_prints_the_agreement(database_url: str, engine: AsyncEngine, tmp_path: Path) -> None:
    settings = load_settings(
        app_env=Environment.dev,
        database_url=database_url,
        data_dir=tmp_path,
        jwt_signing_key=SecretStr(TEST_SIGNING_KEY),
        encryption_keys=[SecretStr(TEST_ENCRYPTION_KEY)],
        run_worker=False,
    )
    out = io.StringIO()
    result = await run_demo(settings, out=out)
    text = out.getvalue()
    assert result.ok, result.problems
    assert "Demo finished: CW holds what the ledger says." in text
    contoso = text.split("for Contoso Ltd")[1].split("Agreement '")[0]
    base = next(line for line in contoso.splitlines() if line.rstrip().endswith("base"))
    proration = next(line for line in contoso.splitlines() if line.rstrip().endswith("proration"))
    assert base.split()[1:4] == ["9", "3.00", "1.00"]
    assert proration.split()[1:3] == ["1", "12.00"]
    assert "+8 licenses × $3.00 × 15/30 days (16–30 Nov 2026)" in contoso
