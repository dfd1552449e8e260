"""The money invariant (DESIGN §5), proven by simulation: over random histories of thirteen months and more, what
the sandbox invoices for a company equals, to the cent, what the plain reference says its periods owe."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from tests.sim.scenario import Scenario, run, scenarios

EXAMPLES = int(
    os.environ.get("SIM_EXAMPLES", "20")
)  # in all; half in each test below (the suite runs them in parallel)

SUITE = settings(
    max_examples=max(1, EXAMPLES // 2),
    derandomize=True,  # a fixed set of histories in the suite (seeded by each test's name); bench.simulate draws anew
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def check(scenario: Scenario, database_url: str, tmp_dir: Path) -> None:
    result = asyncio.run(run(scenario, database_url, tmp_dir))
    assert result.invoiced == result.owed, (
        f"invoiced {result.invoiced}, owed {result.owed} through {result.through}: {scenario}"
    )
    assert result.unexplained == [], f"lines that do not explain their amount: {result.unexplained}: {scenario}"


@SUITE
@given(scenario=scenarios())
def test_what_the_sandbox_invoices_is_what_was_owed(scenario: Scenario, database_url: str, tmp_dir: Path) -> None:
    check(scenario, database_url, tmp_dir)


@SUITE
@given(scenario=scenarios())
def test_what_the_sandbox_invoices_is_what_was_owed_other_histories(
    scenario: Scenario, database_url: str, tmp_dir: Path
) -> None:
    check(scenario, database_url, tmp_dir)
