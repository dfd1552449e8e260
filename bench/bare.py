"""The ingest baseline: a bare FastAPI endpoint at the same path that answers 202 and does nothing else."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/webhooks/portal/{tenant_id}", status_code=202)
async def receive(tenant_id: str) -> dict[str, str]:
    return {"status": "accepted"}
