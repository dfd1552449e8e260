"""The money invariant (DESIGN §5), proven by simulation: over random histories of thirteen months and more, what
the sandbox invoices for a company equals, to the cent, what the plain reference says its periods owe."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from tests.sim.scenario import Scenario, run, scenarios

EXAMPLES = int(os.environ.get("SIM_EXAMPLES", "20"))


@settings(
    max_examples=EXAMPLES,
    derandomize=True,  # a fixed set of histories in the suite; bench/simulate.py draws new ones
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(scenario=scenarios())
def test_what_the_sandbox_invoices_is_what_was_owed(scenario: Scenario, database_url: str, tmp_dir: Path) -> None:
    result = asyncio.run(run(scenario, database_url, tmp_dir))
    assert result.invoiced == result.owed, (
        f"invoiced {result.invoiced}, owed {result.owed} through {result.through}: {scenario}"
    )
