"""The demo walks the whole story across a month end and an invoicing run, and exits green; what it prints shows
what the customer pays."""

from __future__ import annotations

import io
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from app.demo import run_demo
from app.settings import Environment, load_settings
from tests.conftest import TEST_ENCRYPTION_KEY, TEST_SIGNING_KEY


async def test_demo_runs_green_and_prints_the_invoices(database_url: str, engine: AsyncEngine, tmp_path: Path) -> None:
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
    assert "Demo finished: what CW invoiced is what the license history owed." in text
    december = text.split("7. A month end later")[1].split("— 05 Dec 2026 —")[0]
    assert "14.80  +1 license × $3.00 × 13/30 days (3–15 Nov 2026); +9 licenses × $3.00 × 15/30 days" in december
    assert "27.00  Vendor EDR license" in december
    january = text.split("9. January's invoicing run")[1]
    assert "-2.40  Adjustment for 1–30 Nov 2026: owed $12.40" in january
    assert "-12.00  Adjustment for 1–31 Dec 2026: owed $15.00 (5 licenses × $3.00), billed $27.00" in january
    assert "0.60  total" in january
