"""The README's curl walk-through and docs/webhooks.md are exercised, so the docs cannot rot."""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.context import AppContext
from app.security.webhooks import verify
from app.sync.worker import Worker
from tests.conftest import TenantFactory

ROOT = Path(__file__).resolve().parents[1]


def curl_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("curl ")]


def parse_curl(line: str, variables: dict[str, str]) -> dict[str, Any]:
    for name, value in variables.items():
        line = line.replace(f"${name}", value)
    args = shlex.split(line)
    assert args[0] == "curl"
    method, url, headers, data, form = "GET", None, {}, None, []
    i = 1
    while i < len(args):
        arg = args[i]
        if arg == "-s":
            pass
        elif arg == "-X":
            method, i = args[i + 1], i + 1
        elif arg == "-H":
            name, _, value = args[i + 1].partition(":")
            headers[name.strip()] = value.strip()
            i += 1
        elif arg == "-d":
            if headers.get("Content-Type") == "application/json" or args[i + 1].startswith("{"):
                data = args[i + 1]
            else:
                form.append(args[i + 1])
            i += 1
        elif arg.startswith("http"):
            url = arg
        else:
            raise AssertionError(f"the README uses a curl option the test does not understand: {arg}")
        i += 1
    if form and method == "GET":
        method = "POST"
    assert url is not None
    return {
        "method": method,
        "url": url,
        "headers": headers,
        "json_body": data,
        "form": dict(f.split("=", 1) for f in form) if form else None,
    }


@pytest.mark.parametrize(
    "today",
    [
        None,  # the real date, whatever it is when the suite runs
        datetime(2026, 11, 16, 15, 0, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 30, tzinfo=UTC),  # already 1 January 2027 in Europe/Berlin (step 2's timezone)
        datetime(2028, 2, 29, 12, 0, tzinfo=UTC),
    ],
    ids=["real-clock", "mid-november", "new-year-in-berlin", "leap-day"],
)
async def test_every_readme_curl_example_works(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext, today: datetime | None
) -> None:
    """The walk-through depends on no date: it runs as written on any day."""
    if today is not None:
        ctx.clock.freeze(today)
    tenant = await make_tenant("Contoso IT")
    variables = {
        "API": "http://testserver",
        "CLIENT_ID": tenant.client_id,
        "CLIENT_SECRET": tenant.client_secret,
        "TENANT_ID": tenant.tenant_id,
        "TOKEN": "<not yet>",
    }
    lines = curl_lines()
    assert len(lines) >= 15, "the README walk-through lost its examples"
    for line in lines:
        request = parse_curl(line, variables)
        response = await client.request(
            request["method"],
            request["url"],
            headers=request["headers"],
            content=request["json_body"].encode() if request["json_body"] else None,
            data=request["form"],
        )
        assert 200 <= response.status_code < 300, (line, response.status_code, response.text)
        if request["url"].endswith("/api/v1/auth/token"):
            variables["TOKEN"] = response.json()["access_token"]
    text = (
        await client.get(
            "/api/v1/companies/c-42/agreement",
            params={"format": "text"},
            headers={"Authorization": f"Bearer {variables['TOKEN']}"},
        )
    ).text
    assert "Agreement 'Managed Services'" in text
    await Worker(ctx, full_reconcile_every=None).drain()
    status = (
        await client.get("/api/v1/companies/c-42/sync", headers={"Authorization": f"Bearer {variables['TOKEN']}"})
    ).json()
    assert status["status"] == "in_sync", status


def _worked_example() -> dict[str, str]:
    text = (ROOT / "docs" / "webhooks.md").read_text()
    block = text.split("### Worked example")[1].split("```")[1]
    values = {}
    for line in block.strip().splitlines():
        key, _, value = line.partition(" ")
        values[key] = value.strip()
    return values


def test_the_worked_signature_example_verifies() -> None:
    example = _worked_example()
    sent_at = verify(
        secrets=[example["secret"]],
        webhook_id=example["webhook-id"],
        timestamp=example["webhook-timestamp"],
        signature_header=example["webhook-signature"],
        body=example["body"].encode(),
        now=datetime.fromtimestamp(int(example["webhook-timestamp"]), UTC),
    )
    assert int(sent_at.timestamp()) == int(example["webhook-timestamp"])


async def test_the_documented_python_sender_is_accepted(
    client: httpx.AsyncClient, make_tenant: TenantFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await make_tenant("Acme")
    text = (ROOT / "docs" / "webhooks.md").read_text()
    code = text.split("## A sender in Python")[1].split("```python")[1].split("```")[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)  # noqa: S102 (our own documentation)
    captured: dict[str, Any] = {}

    def fake_post(url: str, *, content: bytes, headers: dict[str, str]) -> None:
        captured.update(url=url, content=content, headers=headers)

    monkeypatch.setattr(namespace["httpx"], "post", fake_post)
    namespace["send"](
        "http://testserver",
        tenant.tenant_id,
        tenant.webhook_secret,
        {"type": "company.upserted", "data": {"company_id": "c-1", "name": "Contoso"}},
    )
    response = await client.post(captured["url"], content=captured["content"], headers=captured["headers"])
    assert response.status_code == 202


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    from app.settings import Settings

    text = (ROOT / "README.md").read_text()
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    assert {name.upper() for name in Settings.model_fields} - documented == set()
