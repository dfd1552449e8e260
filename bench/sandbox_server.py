"""A standalone sandbox for benchmarks with several processes: `python -m bench.sandbox_server SEEDS PORT PER_MINUTE
WINDOW` serves a fresh sandbox seeded with the bench companies in SEEDS (JSON, `bench.fixtures.Seed`s in order, so
addition ids match what the database tracks), counting requests against PER_MINUTE in WINDOW-second windows.
`GET /_sandbox/stats` reports what it served."""

from __future__ import annotations

import json
import sys

import uvicorn

from app.connectwise.sandbox.app import Sandbox
from bench.fixtures import Seed, seed_sandbox


def main() -> None:
    seeds_path, port, per_minute, window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    with open(seeds_path) as handle:
        seeds = [Seed(**row) for row in json.load(handle)]
    sandbox = Sandbox(rate_limit_per_minute=per_minute, rate_window=window)
    seed_sandbox(sandbox, seeds)
    uvicorn.run(sandbox, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
