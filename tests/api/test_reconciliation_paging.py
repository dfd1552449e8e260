"""`GET /api/v1/reconciliation` is paginated (issue 16, item 10): paging through a tenant with more companies than
one page shows each company exactly once, in a stable order, even where names repeat."""

from __future__ import annotations

import httpx
from sqlalchemy import update

from app.connectwise.sandbox.app import Sandbox
from app.context import AppContext
from app.db.models import Company
from app.services.tenants import create_client
from tests.sync.bulk import fleet

NAMES = ["Contoso", "Contoso", "Alpha Dental", "Contoso", "Zeta Law", "Contoso", "Contoso"]


async def test_paging_through_the_reconciliation_shows_every_company_exactly_once(
    ctx: AppContext, sandbox: Sandbox, client: httpx.AsyncClient
) -> None:
    group = await fleet(ctx, sandbox, companies=len(NAMES))
    async with ctx.sessionmaker() as s, s.begin():
        for external, name in zip(sorted(group.company_pks), NAMES, strict=True):  # ties: five share a name
            await s.execute(update(Company).where(Company.id == group.company_pks[external]).values(name=name))
        issued = await create_client(s, tenant_id=group.tenant_id)
    token = await client.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": issued.client_id, "client_secret": issued.client_secret},
    )
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

    seen: list[str] = []
    names: list[str] = []
    for offset in range(0, 9, 3):
        response = await client.get("/api/v1/reconciliation", headers=headers, params={"limit": 3, "offset": offset})
        assert response.status_code == 200, response.text
        page = response.json()
        assert (page["total"], page["limit"], page["offset"]) == (7, 3, offset)
        assert len(page["items"]) == min(3, 7 - offset)
        seen += [row["company_id"] for row in page["items"]]
        names += [row["name"] for row in page["items"]]
    assert sorted(seen) == sorted(group.company_pks)  # every company …
    assert len(seen) == len(set(seen))  # … exactly once
    assert names == sorted(NAMES)  # ordered by name across pages
    past_the_end = await client.get("/api/v1/reconciliation", headers=headers, params={"limit": 3, "offset": 7})
    assert past_the_end.json()["items"] == []
    too_big = await client.get("/api/v1/reconciliation", headers=headers, params={"limit": 501})
    assert too_big.status_code == 422
