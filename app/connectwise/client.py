"""The only code that speaks ConnectWise Manage: an async client around an injected `httpx.AsyncClient`.

* Codebase lookup (`/login/companyinfo/{company}`), cloud hosts get their `api-` prefix.
* `Authorization: Basic base64(company+public:private)`, `clientId` header, pinned `Accept` version.
* Every request passes the tenant's request budget first.
* Retries (stamina: exponential backoff with jitter, `Retry-After` honoured and clamped) only where safe: reads,
  PATCH (replace is idempotent), and a POST only when it certainly was not processed (connection refused, 429).
  A POST whose outcome is unknown raises `CWNetworkError` with `outcome_unknown=True`; the caller must look its
  marker up before creating again.
* httpx types never leave this module; errors are `app.connectwise.errors`.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
import stamina
from pydantic import BaseModel, SecretStr

from app.connectwise import schemas
from app.connectwise.budget import Budget
from app.connectwise.conditions import Condition, F
from app.connectwise.errors import (
    CWAuthError,
    CWConfigurationError,
    CWConflictError,
    CWError,
    CWFieldError,
    CWForbiddenError,
    CWNetworkError,
    CWNotFoundError,
    CWPermanentError,
    CWRetryableError,
    CWServerError,
    CWThrottledError,
    CWValidationError,
)
from app.security.ssrf import UnsafeSiteError

API_VERSION = "2025.16"
MAX_PAGE_SIZE = 1000
MAX_RETRY_AFTER = 60.0
_CODEBASE = re.compile(r"^[A-Za-z0-9_.]+/$")
ModelT = TypeVar("ModelT", bound=BaseModel)

# `F(...) == False` builds a CW condition string, not a Python comparison.
ACTIVE = F("inactiveFlag") == False  # noqa: E712
_PROBE_PATHS = {
    "companies": "/company/companies",
    "agreements": "/finance/agreements",
    "catalog": "/procurement/catalog",
}
NOT_DELETED = F("deletedFlag") == False  # noqa: E712

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=30.0, pool=30.0)


@dataclass(frozen=True)
class CWCredentials:
    site_url: str  # scheme://host[:port], e.g. https://na.myconnectwise.net
    company_id: str
    public_key: str
    private_key: SecretStr = field(repr=False)
    client_id: SecretStr = field(repr=False)

    def __repr__(self) -> str:
        return f"CWCredentials(site_url={self.site_url!r}, company_id={self.company_id!r}, keys=***)"

    def authorization(self) -> str:
        raw = f"{self.company_id}+{self.public_key}:{self.private_key.get_secret_value()}"
        return "Basic " + base64.b64encode(raw.encode()).decode()


class CodebaseCache:
    """Resolved API base URLs per site and login company, so each job does not repeat the codebase lookup.
    Entries expire (CW upgrades change the codebase)."""

    def __init__(self, ttl_seconds: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[str, float]] = {}

    def get(self, credentials: CWCredentials) -> str | None:
        entry = self._entries.get((credentials.site_url, credentials.company_id.lower()))
        if entry is None or entry[1] < self._clock():
            return None
        return entry[0]

    def put(self, credentials: CWCredentials, base_url: str) -> None:
        self._entries[(credentials.site_url, credentials.company_id.lower())] = (base_url, self._clock() + self._ttl)


PatchOp = dict[str, Any]


def replace(path: str, value: Any) -> PatchOp:
    return {"op": "replace", "path": path, "value": value}


def _retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` as seconds or as an HTTP date (cloud front ends send either), clamped to a minute."""
    raw = response.headers.get("retry-after", "").strip()
    if raw.isascii() and raw.isdigit():
        return min(float(raw), MAX_RETRY_AFTER)
    try:
        moment = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(max((moment - datetime.now(UTC)).total_seconds(), 0.0), MAX_RETRY_AFTER)


def _error_from_response(response: httpx.Response) -> CWError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    code = message = None
    errors: tuple[CWFieldError, ...] = ()
    # Only an answer shaped like CW's errors ({code, message, errors}; a 429's {error, message}) is passed on, and
    # only in short: whatever else a remote host says is not echoed to the MSP (it may not be ConnectWise at all).
    kind = body.get("code", body.get("error")) if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("message"), str) and isinstance(kind, str):
        code, message = _short(kind, 64), _short(body["message"], 300)
        raw_errors = body.get("errors") or []
        if isinstance(raw_errors, list):
            errors = tuple(
                CWFieldError(
                    code=_short(str(e.get("code", "")), 64),
                    message=_short(str(e.get("message", "")), 200),
                    field=_short(str(e["field"]), 64) if e.get("field") is not None else None,
                    resource=_short(str(e["resource"]), 64) if e.get("resource") is not None else None,
                )
                for e in raw_errors[:10]
                if isinstance(e, dict)
            )
    text = str(message or f"ConnectWise answered HTTP {status}")
    kwargs: dict[str, Any] = {"status": status, "code": str(code) if code else None, "errors": errors}
    if status == 429:
        return CWThrottledError(text, retry_after=_retry_after(response), **kwargs)
    if status >= 500:
        return CWServerError(text, **kwargs)
    by_status: dict[int, type[CWPermanentError]] = {
        400: CWValidationError,
        401: CWAuthError,
        403: CWForbiddenError,
        404: CWNotFoundError,
        409: CWConflictError,
    }
    return by_status.get(status, CWPermanentError)(text, **kwargs)


def _short(text: str, limit: int) -> str:
    """Printable, at most `limit` characters."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _retry_hook(exc: BaseException) -> bool | float:
    """stamina backoff hook: retry transient errors; a 429's Retry-After decides the wait."""
    if isinstance(exc, CWThrottledError) and exc.retry_after is not None:
        return max(exc.retry_after, 0.1)
    return isinstance(exc, CWRetryableError)


def _post_retry_hook(exc: BaseException) -> bool | float:
    """For creates: only retry when the request certainly was not processed."""
    if isinstance(exc, CWNetworkError) and not exc.outcome_unknown:
        return True
    if isinstance(exc, CWThrottledError):
        return _retry_hook(exc)
    return False


def _network_error(exc: httpx.HTTPError, *, sent: bool) -> CWNetworkError:
    return CWNetworkError(f"no response from ConnectWise ({type(exc).__name__})", outcome_unknown=sent)


class ConnectWiseClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        credentials: CWCredentials,
        *,
        budget: Budget | None = None,
        api_version: str = API_VERSION,
        attempts: int = 6,
        retry_timeout: float = 120.0,
        on_call: Callable[[str, str], None] | None = None,
        codebase_cache: CodebaseCache | None = None,
        cycle_cache: dict[int, schemas.BillingCycle] | None = None,
    ) -> None:
        self._http = http
        self._credentials = credentials
        self._budget = budget
        self._api_version = api_version
        self._attempts = attempts
        self._retry_timeout = retry_timeout
        self._on_call = on_call
        self._codebase_cache = codebase_cache
        self._base_url: str | None = codebase_cache.get(credentials) if codebase_cache else None
        self.company_info: schemas.CompanyInfo | None = None
        self._cycles: dict[int, schemas.BillingCycle] = cycle_cache if cycle_cache is not None else {}
        self.calls = 0

    def __repr__(self) -> str:
        return f"ConnectWiseClient(site={self._credentials.site_url!r})"

    # ---------------------------------------------------------------- transport
    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": self._credentials.authorization(),
            "clientId": self._credentials.client_id.get_secret_value(),
            "Accept": f"application/vnd.connectwise.com+json; version={self._api_version}",
        }

    def _record(self, method: str, outcome: str) -> None:
        self.calls += 1
        if self._on_call:
            self._on_call(method, outcome)

    async def _send_once(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        authenticated: bool = True,
    ) -> httpx.Response:
        if self._budget is not None:
            await self._budget.acquire()
        all_headers = {**(self._headers() if authenticated else {"Accept": "application/json"}), **(headers or {})}
        try:
            response = await self._http.request(method, url, params=params, json=json, headers=all_headers)
        except UnsafeSiteError as exc:  # the guarded network backend refused the address (app/connectwise/network.py)
            self._record(method, "blocked")
            raise CWConfigurationError(f"The ConnectWise site may not be reached: {exc}") from None
        except httpx.ConnectError as exc:
            self._record(method, "network")
            raise _network_error(exc, sent=False) from None
        except httpx.HTTPError as exc:
            self._record(method, "network")
            raise _network_error(exc, sent=True) from None
        if response.is_success:
            self._record(method, "ok")
            return response
        error = _error_from_response(response)
        self._record(method, str(response.status_code))
        raise error

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        hook = _post_retry_hook if method == "POST" else _retry_hook
        async for attempt in stamina.retry_context(
            on=hook,
            attempts=self._attempts,
            timeout=self._retry_timeout,
            wait_initial=0.5,
            wait_max=30.0,
            wait_jitter=1.0,
        ):
            with attempt:
                return await self._send_once(method, url, **kwargs)
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def base_url(self) -> str:
        """Look the codebase up once: `https://{site}/{codebase}apis/3.0`."""
        if self._base_url is None:
            parts = urlsplit(self._credentials.site_url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise CWConfigurationError("The ConnectWise site URL must look like https://na.myconnectwise.net")
            root = f"{parts.scheme}://{parts.netloc}"
            try:
                response = await self._send(
                    "GET", f"{root}/login/companyinfo/{self._credentials.company_id}", authenticated=False
                )
                info = schemas.CompanyInfo.model_validate(response.json())
            except CWNotFoundError:
                raise CWConfigurationError(
                    f"ConnectWise does not know the company id {self._credentials.company_id!r} at {root}"
                ) from None
            except ValueError:
                raise CWConfigurationError(f"{root} did not answer the codebase lookup like ConnectWise") from None
            if not _CODEBASE.match(info.codebase):
                raise CWConfigurationError(f"unexpected codebase {info.codebase!r} from {root}")
            netloc = parts.netloc
            if info.is_cloud and not netloc.startswith("api-"):
                netloc = "api-" + netloc
            self.company_info = info
            self._base_url = f"{parts.scheme}://{netloc}/{info.codebase}apis/3.0"
            if self._codebase_cache is not None:
                self._codebase_cache.put(self._credentials, self._base_url)
        return self._base_url

    async def _url(self, path: str) -> str:
        return await self.base_url() + path

    async def get(self, path: str, *, params: dict[str, Any] | None = None) -> Any:
        return (await self._send("GET", await self._url(path), params=params)).json()

    async def post(self, path: str, body: dict[str, Any] | None) -> Any:
        return (await self._send("POST", await self._url(path), json=body)).json()

    async def patch(self, path: str, operations: Sequence[PatchOp]) -> Any:
        if not operations:
            raise ValueError("a PATCH needs at least one operation")
        return (await self._send("PATCH", await self._url(path), json=list(operations))).json()

    async def delete(self, path: str) -> None:
        await self._send("DELETE", await self._url(path))

    async def list_pages(
        self,
        path: str,
        *,
        conditions: Condition | None = None,
        fields: str | None = None,
        order_by: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        limit: int | None = None,
    ) -> list[Any]:
        """Every row, following `Link: rel="next"` (never to another host)."""
        base = await self.base_url()
        params: dict[str, Any] = {"pageSize": min(page_size, MAX_PAGE_SIZE), "page": 1}
        if conditions is not None:
            params["conditions"] = str(conditions)
        if fields:
            params["fields"] = fields
        if order_by:
            params["orderBy"] = order_by
        rows: list[Any] = []
        url: str | None = base + path
        request_params: dict[str, Any] | None = params
        while url is not None:
            response = await self._send("GET", url, params=request_params)
            page = response.json()
            rows.extend(page)
            if limit is not None and len(rows) >= limit:
                return rows[:limit]
            next_url = response.links.get("next", {}).get("url")
            if not next_url or not page:
                break
            if urlsplit(next_url).netloc != urlsplit(base).netloc:
                raise CWConfigurationError("ConnectWise paging pointed at another host; refusing to follow")
            url, request_params = next_url, None
        return rows

    async def sweep(
        self,
        path: str,
        *,
        conditions: Condition | None = None,
        fields: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncIterator[list[Any]]:
        """Forward-only paging (`pagination-type: forward-only`, `pageId` = last id seen) for full sweeps."""
        page_id = 0
        while True:
            params: dict[str, Any] = {"pageSize": min(page_size, MAX_PAGE_SIZE), "pageId": page_id}
            if conditions is not None:
                params["conditions"] = str(conditions)
            if fields:
                params["fields"] = fields
            response = await self._send(
                "GET", await self._url(path), params=params, headers={"pagination-type": "forward-only"}
            )
            page = response.json()
            if not page:
                return
            yield page
            if len(page) < page_size:
                return
            page_id = int(page[-1]["id"])

    # ---------------------------------------------------------------- typed operations
    @staticmethod
    def _parse(model: type[ModelT], rows: list[Any]) -> list[ModelT]:
        return [model.model_validate(row) for row in rows]

    async def system_info(self) -> schemas.Info:
        return schemas.Info.model_validate(await self.get("/system/info"))

    async def search_companies(self, text: str | None = None, *, limit: int = 50) -> list[schemas.Company]:
        condition = NOT_DELETED
        if text:
            condition = condition & (F("name").contains_text(text) | F("identifier").contains_text(text))
        rows = await self.list_pages(
            "/company/companies",
            conditions=condition,
            order_by="name asc",
            page_size=min(limit, MAX_PAGE_SIZE),
            limit=limit,
        )
        return self._parse(schemas.Company, rows)

    async def find_companies(self, condition: Condition, *, limit: int = 50) -> list[schemas.Company]:
        rows = await self.list_pages("/company/companies", conditions=condition, limit=limit)
        return self._parse(schemas.Company, rows)

    async def get_company(self, company_id: int) -> schemas.Company:
        return schemas.Company.model_validate(await self.get(f"/company/companies/{company_id}"))

    async def list_agreements(self, company_id: int) -> list[schemas.Agreement]:
        rows = await self.list_pages(
            "/finance/agreements", conditions=F("company/id") == company_id, order_by="name asc"
        )
        return self._parse(schemas.Agreement, rows)

    async def get_agreement(self, agreement_id: int) -> schemas.Agreement:
        return schemas.Agreement.model_validate(await self.get(f"/finance/agreements/{agreement_id}"))

    async def get_agreements(self, agreement_ids: Sequence[int]) -> list[schemas.Agreement]:
        """Several agreements in one call per 1,000 (`id in (…)`)."""
        found: list[schemas.Agreement] = []
        ids = sorted(set(agreement_ids))
        for start in range(0, len(ids), MAX_PAGE_SIZE):
            chunk = ids[start : start + MAX_PAGE_SIZE]
            rows = await self.list_pages("/finance/agreements", conditions=F("id").in_(chunk), page_size=len(chunk))
            found += self._parse(schemas.Agreement, rows)
        return found

    # ---------------------------------------------------------------- agreement invoicing (read; §10)
    async def list_invoices(
        self, *, agreement_id: int | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[schemas.Invoice]:
        """Agreement invoices, newest first: of one agreement, dated on or after `since`."""
        condition: Condition = F("type") == "Agreement"
        if agreement_id is not None:
            condition = condition & (F("agreement/id") == agreement_id)
        if since is not None:
            condition = condition & (F("date") >= since)
        rows = await self.list_pages("/finance/invoices", conditions=condition, order_by="date desc", limit=limit)
        return self._parse(schemas.Invoice, rows)

    async def count_invoices(self, *, agreement_id: int) -> int:
        condition = (F("type") == "Agreement") & (F("agreement/id") == agreement_id)
        body = await self.get("/finance/invoices/count", params={"conditions": str(condition)})
        return int(schemas.Count.model_validate(body).count)

    async def get_invoice(self, invoice_id: int) -> schemas.Invoice:
        return schemas.Invoice.model_validate(await self.get(f"/finance/invoices/{invoice_id}"))

    async def get_agreement_recap(self, agreement_id: int) -> schemas.AgreementRecap:
        """The agreement's invoicing recap (last and next invoice); CW's public clients pass the agreement's id."""
        return schemas.AgreementRecap.model_validate(await self.get(f"/finance/agreementrecap/{agreement_id}"))

    async def list_agreement_recaps(self, agreement_ids: Sequence[int]) -> list[schemas.AgreementRecap]:
        found: list[schemas.AgreementRecap] = []
        ids = sorted(set(agreement_ids))
        for start in range(0, len(ids), MAX_PAGE_SIZE):
            chunk = ids[start : start + MAX_PAGE_SIZE]
            rows = await self.list_pages(
                "/finance/agreementrecap/", conditions=F("id").in_(chunk), page_size=len(chunk)
            )
            found += self._parse(schemas.AgreementRecap, rows)
        return found

    async def invoice_agreement(self, agreement_id: int) -> int:
        """Run agreement invoicing for the agreement's next due period (what an MSP does in CW); the new invoice's
        id. For tools and tests: the service itself never invoices."""
        return int(await self.post(f"/finance/agreements/{agreement_id}/invoice", None))

    async def list_billing_cycles(self) -> list[schemas.BillingCycle]:
        return self._parse(schemas.BillingCycle, await self.list_pages("/finance/billingCycles"))

    async def get_billing_cycle(self, cycle_id: int) -> schemas.BillingCycle:
        """Billing cycles are a setup table that hardly ever changes: read once per client (and per cache)."""
        cached = self._cycles.get(cycle_id)
        if cached is None:
            cached = schemas.BillingCycle.model_validate(await self.get(f"/finance/billingCycles/{cycle_id}"))
            self._cycles[cycle_id] = cached
        return cached

    async def list_agreement_types(self) -> list[schemas.NamedItem]:
        return self._parse(schemas.NamedItem, await self.list_pages("/finance/agreements/types"))

    async def search_catalog(self, text: str | None = None, *, limit: int = 50) -> list[schemas.CatalogItem]:
        condition = ACTIVE
        if text:
            condition = condition & (F("identifier").contains_text(text) | F("description").contains_text(text))
        rows = await self.list_pages(
            "/procurement/catalog",
            conditions=condition,
            order_by="identifier asc",
            page_size=min(limit, MAX_PAGE_SIZE),
            limit=limit,
        )
        return self._parse(schemas.CatalogItem, rows)

    async def get_catalog_item(self, item_id: int) -> schemas.CatalogItem:
        return schemas.CatalogItem.model_validate(await self.get(f"/procurement/catalog/{item_id}"))

    async def find_catalog_items(self, condition: Condition) -> list[schemas.CatalogItem]:
        return self._parse(schemas.CatalogItem, await self.list_pages("/procurement/catalog", conditions=condition))

    async def create_catalog_item(self, item: schemas.CatalogItemCreate) -> schemas.CatalogItem:
        """A non-inventory catalog item (the product the licenses are billed as)."""
        body: dict[str, Any] = {
            "identifier": item.identifier,
            "description": item.description,
            "customerDescription": item.customer_description,
            "subcategory": {"id": item.subcategory_id},
            "type": {"id": item.type_id},
            "productClass": "NonInventory",
            "price": schemas.wire_value(item.unit_price),
            "cost": schemas.wire_value(item.unit_cost),
            "taxableFlag": item.taxable,
        }
        if item.unit_of_measure_id is not None:
            body["unitOfMeasure"] = {"id": item.unit_of_measure_id}
        return schemas.CatalogItem.model_validate(await self.post("/procurement/catalog", body))

    async def list_categories(self) -> list[schemas.NamedItem]:
        return self._parse(schemas.NamedItem, await self.list_pages("/procurement/categories", conditions=ACTIVE))

    async def list_subcategories(self) -> list[schemas.NamedItem]:
        return self._parse(
            schemas.NamedItem,
            await self.list_pages("/procurement/subcategories/", conditions=ACTIVE),
        )

    async def list_product_types(self) -> list[schemas.NamedItem]:
        return self._parse(schemas.NamedItem, await self.list_pages("/procurement/types", conditions=ACTIVE))

    async def list_units_of_measure(self) -> list[schemas.NamedItem]:
        return self._parse(
            schemas.NamedItem,
            await self.list_pages("/procurement/unitOfMeasures", conditions=ACTIVE),
        )

    async def list_additions(self, agreement_id: int, *, conditions: Condition | None = None) -> list[schemas.Addition]:
        rows = await self.list_pages(f"/finance/agreements/{agreement_id}/additions", conditions=conditions)
        return self._parse(schemas.Addition, rows)

    async def get_addition(self, agreement_id: int, addition_id: int) -> schemas.Addition:
        return schemas.Addition.model_validate(
            await self.get(f"/finance/agreements/{agreement_id}/additions/{addition_id}")
        )

    async def create_addition(self, agreement_id: int, body: dict[str, Any]) -> schemas.Addition:
        return schemas.Addition.model_validate(await self.post(f"/finance/agreements/{agreement_id}/additions", body))

    async def add_line(
        self, agreement_id: int, *, product_id: int, serial_number: str, values: schemas.AdditionWrite
    ) -> schemas.Addition:
        """Create a billable addition of the product, marked with `serial_number`."""
        body = {
            "product": {"id": product_id},
            "billCustomer": "Billable",
            "serialNumber": serial_number,
            **{k: v for k, v in schemas.addition_body(values).items() if v is not None},
        }
        return await self.create_addition(agreement_id, body)

    async def patch_addition(
        self, agreement_id: int, addition_id: int, operations: Sequence[PatchOp]
    ) -> schemas.Addition:
        return schemas.Addition.model_validate(
            await self.patch(f"/finance/agreements/{agreement_id}/additions/{addition_id}", operations)
        )

    async def update_line(self, agreement_id: int, addition_id: int, values: schemas.AdditionWrite) -> schemas.Addition:
        """PATCH the fields named in `values.fields` (a null clears the field)."""
        operations = [
            {"op": "remove", "path": name} if value is None else replace(name, value)
            for name, value in schemas.addition_body(values).items()
        ]
        return await self.patch_addition(agreement_id, addition_id, operations)

    async def find_lines(self, agreement_id: int, *, product_id: int) -> list[schemas.Addition]:
        """Every addition of the product on the agreement (the reconcile's one read)."""
        return await self.list_additions(agreement_id, conditions=F("product/id") == product_id)

    async def remove_line(self, agreement_id: int, addition_id: int) -> None:
        """DELETE an addition that never billed. Already gone (a retried delete whose first answer was lost) is done."""
        try:
            await self.delete(f"/finance/agreements/{agreement_id}/additions/{addition_id}")
        except CWNotFoundError:
            return

    # Permission probes (the connection test): each asks for something CW refuses one way without the permission
    # (403) and another way with it, and changes nothing.
    async def first_id(self, resource: Literal["companies", "agreements", "catalog"]) -> int | None:
        """Read one row (can the API member read this?); its id, or None when there is none."""
        rows = await self.list_pages(_PROBE_PATHS[resource], page_size=1, limit=1)
        return int(rows[0]["id"]) if rows else None

    async def probe_addition_create(self, agreement_id: int) -> None:
        """An addition of a product that cannot exist: 403 without the permission (raised), 400 with it."""
        try:
            await self.create_addition(agreement_id, {"product": {"id": 0}, "billCustomer": "Billable"})
        except CWValidationError:
            return
        raise CWError("ConnectWise accepted a probe addition it should have refused; check its validation")

    async def probe_addition_edit(self, agreement_id: int) -> None:
        """A PATCH of addition 0: 403 without the permission (raised), 404 with it."""
        try:
            await self.patch_addition(agreement_id, 0, [replace("quantity", 0)])
        except (CWNotFoundError, CWValidationError):
            return
        raise CWError("ConnectWise reports an addition with id 0; cannot tell whether edits are allowed")

    async def cancel_addition(self, agreement_id: int, addition_id: int, *, on: datetime) -> schemas.Addition:
        """End billing for an addition: CW keeps the line with a cancelled date (history), never a delete."""
        return await self.patch_addition(
            agreement_id, addition_id, [replace("cancelledDate", on.strftime("%Y-%m-%dT%H:%M:%SZ"))]
        )
