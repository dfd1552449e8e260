"""The CLI's tenant workflow against a real database, and the exported OpenAPI document."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.cli import export_openapi
from app.main import create_app
from app.settings import Settings
from tests.conftest import TEST_ENCRYPTION_KEY, TEST_SIGNING_KEY

ROOT = Path(__file__).resolve().parents[1]


def test_exported_openapi_matches_the_app(app: FastAPI) -> None:
    committed = ROOT / "openapi" / "openapi.json"
    assert committed.exists(), "openapi/openapi.json is missing; run: cw-billing-sync openapi"
    assert json.loads(committed.read_text()) == json.loads(json.dumps(app.openapi())), (
        "openapi/openapi.json is out of date; run: cw-billing-sync openapi"
    )
    assert committed.read_text() == export_openapi()


def _cli(*args: str, database_url: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "APP_ENV": "production",
        "DATABASE_URL": database_url,
        "JWT_SIGNING_KEY": TEST_SIGNING_KEY,
        "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        **(env or {}),
    }
    return subprocess.run(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        check=False,
        timeout=120,
    )


@pytest.fixture
def cli_database(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    result = _cli("migrate", database_url=url)
    assert result.returncode == 0, result.stderr
    return url


async def test_tenant_create_json_then_the_credentials_work(cli_database: str, settings: Settings) -> None:
    created = _cli("tenant", "create", "--name", "Contoso IT", "--json", database_url=cli_database)
    assert created.returncode == 0, created.stderr
    values = json.loads(created.stdout)
    assert set(values) == {"tenant_id", "client_id", "client_secret", "webhook_secret"}
    assert values["webhook_secret"].startswith("whsec_")

    extra = _cli("client", "create", "--tenant", values["tenant_id"], "--json", database_url=cli_database)
    assert extra.returncode == 0, extra.stderr
    assert json.loads(extra.stdout)["client_id"] != values["client_id"]

    rotated = _cli("webhook-secret", "rotate", "--tenant", values["tenant_id"], "--json", database_url=cli_database)
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["webhook_secret"] != values["webhook_secret"]

    unknown = _cli("client", "create", "--tenant", "nope", database_url=cli_database)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: No tenant nope"

    # The printed credentials get a token from an app on that database, for that tenant.
    app = create_app(settings.model_copy(update={"database_url": cli_database}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        token = await http.post(
            "/api/v1/auth/token", data={"client_id": values["client_id"], "client_secret": values["client_secret"]}
        )
        assert token.status_code == 200
        me = await http.get("/api/v1/auth/whoami", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
        assert me.json()["tenant_id"] == values["tenant_id"]
    await app.state.ctx.engine.dispose()
    # Secrets never reach the logs or error output.
    for output in (created.stderr, extra.stderr, rotated.stderr, unknown.stderr):
        assert values["client_secret"] not in output


def test_cli_refuses_a_short_signing_key(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    result = _cli("migrate", database_url=url, env={"JWT_SIGNING_KEY": "too-short"})
    assert result.returncode != 0
    assert "JWT_SIGNING_KEY" in result.stderr
    assert "at least 32" in result.stderr


async def test_tenants_and_clients_are_listed_a_client_is_revoked_and_a_taken_name_refused(
    cli_database: str, settings: Settings
) -> None:
    created = json.loads(_cli("tenant", "create", "--name", "Fabrikam", "--json", database_url=cli_database).stdout)
    twice = _cli("tenant", "create", "--name", "fabrikam ", database_url=cli_database)
    assert twice.returncode == 2
    assert "already called" in twice.stderr
    assert "--allow-same-name" in twice.stderr
    meant = _cli("tenant", "create", "--name", "Fabrikam", "--allow-same-name", "--json", database_url=cli_database)
    assert meant.returncode == 0, meant.stderr

    tenants = json.loads(_cli("tenant", "list", "--json", database_url=cli_database).stdout)
    assert [t["name"] for t in tenants] == ["Fabrikam", "Fabrikam"]
    assert created["tenant_id"] in {t["tenant_id"] for t in tenants}

    clients = _cli("client", "list", "--tenant", created["tenant_id"], "--json", database_url=cli_database)
    listed = json.loads(clients.stdout)
    assert [(c["client_id"], c["revoked_at"]) for c in listed] == [(created["client_id"], None)]
    assert created["client_secret"] not in clients.stdout  # never the secret

    app = create_app(settings.model_copy(update={"database_url": cli_database}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        token = await http.post(
            "/api/v1/auth/token", data={"client_id": created["client_id"], "client_secret": created["client_secret"]}
        )
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        assert (await http.get("/api/v1/auth/whoami", headers=headers)).status_code == 200
        revoked = _cli("client", "revoke", created["client_id"], database_url=cli_database)
        assert revoked.returncode == 0, revoked.stderr
        assert (await http.get("/api/v1/auth/whoami", headers=headers)).status_code == 401  # at once
    await app.state.ctx.engine.dispose()
    after = json.loads(
        _cli("client", "list", "--tenant", created["tenant_id"], "--json", database_url=cli_database).stdout
    )
    assert after[0]["revoked_at"] is not None
    unknown = _cli("client", "revoke", "cwbs_nope", database_url=cli_database)
    assert (unknown.returncode, unknown.stderr.strip()) == (2, "error: No API client cwbs_nope")


def test_every_cli_option_says_what_it_takes() -> None:
    """`--help` explains every option (is `--tenant` an id or a name? the help says)."""
    from app.cli import build_parser

    def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        found = [parser]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found += parsers(sub)
        return found

    silent = [
        f"{p.prog} {'/'.join(a.option_strings) or a.dest}"
        for p in parsers(build_parser())
        for a in p._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction) and not a.help
    ]
    assert silent == []


def test_every_operation_has_a_description_and_examples_that_match_its_schemas() -> None:
    """`/docs` explains every operation and shows a realistic request and answer for it (recorded by
    `python -m app.examples`); an example that no longer matches its schema fails here."""
    import jsonschema

    document = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    problems = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            where = f"{method.upper()} {path}"
            if not operation.get("description"):
                problems.append(f"{where}: no description")
            media = [("request", m) for m in operation.get("requestBody", {}).get("content", {}).values()] + [
                (f"answer {status}", m)
                for status, answer in operation["responses"].items()
                if status.startswith("2")
                for media_type, m in answer.get("content", {}).items()
                if media_type.endswith("json")
            ]
            for what, content in media:
                if "example" not in content:
                    problems.append(f"{where}: {what} has no example")
                    continue
                schema = {**content.get("schema", {}), "components": document["components"]}
                try:
                    jsonschema.validate(content["example"], schema, cls=jsonschema.Draft202012Validator)
                except jsonschema.ValidationError as exc:
                    problems.append(f"{where}: {what} example does not match: {exc.message}")
    assert problems == []
