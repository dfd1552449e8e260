"""The money invariant on many fresh histories: `python -m bench.simulate [--histories N] [--seed S] [--postgres]`.

Hypothesis draws N random histories (tests/sim/scenario.py: thirteen months and more of late, out-of-order,
backdated and future-dated changes, price changes, pauses, moves, cancelled agreements, adopted lines, review mode,
CW faults and worker crashes, invoicing on a random day of every month); each is played through the service against
the sandbox, what the sandbox invoiced is compared with what the plain reference (tests/sim/reference.py) says was
owed, and every invoice line's text is read against its amount (tests/sim/explain.py). Prints the rate (histories
per minute); on the first history billed wrong, hypothesis shrinks it and the smallest counterexample is printed,
ready to paste into a test. Exit status 1 when one was found.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from tests.sim.scenario import Scenario, run, scenarios

ROOT = Path(__file__).resolve().parents[1]


def simulate(count: int, seed: int, url: str, data_dir: Path) -> dict[str, Any]:
    runs: list[float] = []
    failing: list[dict[str, str]] = []
    drawn = 0

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(scenarios())
    def check(scenario: Scenario) -> None:
        nonlocal drawn
        started = time.perf_counter()
        try:
            result = asyncio.run(run(scenario, url, data_dir))
        except Exception as exc:
            failing.append({"scenario": repr(scenario), "error": f"{type(exc).__name__}: {exc}"[:500]})
            raise
        finally:
            runs.append(time.perf_counter() - started)
        if not failing:
            drawn += 1
            if drawn % 50 == 0:
                print(f"  {drawn} histories billed right", file=sys.stderr, flush=True)
        if result.invoiced != result.owed or result.unexplained:
            failing.append(
                {
                    "scenario": repr(scenario),
                    "invoiced": str(result.invoiced),
                    "owed": str(result.owed),
                    "through": result.through.isoformat(),
                    "unexplained": "; ".join(result.unexplained)[:1000],
                }
            )
            raise AssertionError("billed wrong or a line does not explain its amount")

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            hypothesis_seed(seed)(check)()
        except Exception:  # the counterexample is in `failing`: its last entry is the smallest one
            if not failing:
                raise
    seconds = time.perf_counter() - started
    return {
        "histories": drawn,
        "billed_wrong": bool(failing),
        "seconds": round(seconds, 1),
        "histories_per_minute": round(len(runs) / sum(runs) * 60, 1) if runs else None,
        "smallest_counterexample": failing[-1] if failing else None,
        "runs_while_shrinking": len(runs) - drawn if failing else 0,
    }


def _run_jobs(args: argparse.Namespace) -> dict[str, Any]:
    """Split the histories over `jobs` processes (each its own database and seed) and merge their reports."""
    import subprocess

    out_dir = Path(tempfile.mkdtemp(prefix="cwbs-sim-jobs-"))
    shares = [args.histories // args.jobs + (1 if i < args.histories % args.jobs else 0) for i in range(args.jobs)]
    processes = []
    for job, share in enumerate(shares):
        command = [sys.executable, "-m", "bench.simulate", "--histories", str(share), "--seed", str(args.seed + job)]
        command += ["--jobs", "1", "--out", str(out_dir / f"job{job}.json")]
        if args.postgres:
            command += ["--postgres", f"{args.postgres}_{job}"]
        processes.append(subprocess.Popen(command, cwd=ROOT))  # noqa: S603 (this script)
    for process in processes:
        process.wait()
    reports = [json.loads((out_dir / f"job{job}.json").read_text()) for job in range(args.jobs)]
    histories = sum(r["histories"] for r in reports)
    seconds = max(r["seconds"] for r in reports)
    wrong = next((r["smallest_counterexample"] for r in reports if r["smallest_counterexample"]), None)
    return {
        "seed": args.seed,
        "database": reports[0]["database"],
        "jobs": args.jobs,
        "histories": histories,
        "billed_wrong": any(r["billed_wrong"] for r in reports),
        "seconds": seconds,
        # wall clock over all processes together (each job's own rate is in its report)
        "histories_per_minute": round(histories / seconds * 60, 1) if seconds else None,
        "per_job": [{k: r[k] for k in ("seed", "histories", "seconds", "histories_per_minute")} for r in reports],
        "smallest_counterexample": wrong,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--histories", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(2**32))
    parser.add_argument("--jobs", type=int, default=1, help="processes to spread the histories over")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "simulate.json")
    parser.add_argument(
        "--postgres",
        nargs="?",
        const="postgresql+asyncpg://postgres@127.0.0.1:5432/cwbs_sim",
        help="run on PostgreSQL (this URL, or a local default); SQLite otherwise",
    )
    args = parser.parse_args()
    if args.jobs > 1:
        report = _run_jobs(args)
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="cwbs-sim-"))
        url = args.postgres or f"sqlite+aiosqlite:///{data_dir / 'sim.db'}"
        database = url.split("+")[0]
        print(f"seed {args.seed}: up to {args.histories} histories on {database}", file=sys.stderr, flush=True)
        report = {"seed": args.seed, "database": database, **simulate(args.histories, args.seed, url, data_dir)}
    print(
        f"{report['histories']} histories billed right in {report['seconds']} s "
        f"({report['histories_per_minute']} per minute on {report['database']})"
    )
    if report["smallest_counterexample"]:
        print("billed wrong; smallest counterexample:", json.dumps(report["smallest_counterexample"], indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["billed_wrong"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
