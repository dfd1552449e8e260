"""A stateful fake of the ConnectWise Manage endpoints this service uses, in CW's shapes and behaviours.

It runs in-process (`Sandbox.http_client()`, an httpx transport straight into the ASGI app) or standalone
(`cw-billing-sync sandbox`). Per instance: fault injection (latency, 429 + Retry-After, 5xx, timeouts, write
applied but response lost), a rate limit answered with CW's 429 body, permission denials, and call statistics.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx

from app.connectwise.sandbox.conditions import ConditionSyntaxError, evaluate, parse
from app.connectwise.sandbox.invoicing import AgreementInvoicing
from app.connectwise.sandbox.store import Collection, SandboxError, SandboxStore, seed, utc_now

CODEBASE = "v4_6_release/"
API_PREFIX = f"/{CODEBASE}apis/3.0"
SANDBOX_COMPANY = "sandbox"
SANDBOX_PUBLIC_KEY = "sandbox-public"
SANDBOX_PRIVATE_KEY = "sandbox-private"
SPEC_VERSION = "2026.4"
MEDIA_TYPE = f"application/vnd.connectwise.com+json; version={SPEC_VERSION}"
FAULT_KINDS = ("429", "500", "503", "timeout", "lost_response")


class ConnectionDropped(Exception):
    """The sandbox hangs up without answering (in-process: surfaces as httpx.ReadTimeout)."""


@dataclass
class FaultPlan:
    """Random faults on API calls: `rate` of them fail, with a kind drawn by `weights`."""

    rate: float = 0.0
    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 1.0))
    latency: float = 0.0
    retry_after: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)  # noqa: S311 (fault injection, not security)

    def draw(self) -> str | None:
        if self.rate <= 0 or self._random.random() >= self.rate:
            return None
        kinds = list(self.weights)
        return self._random.choices(kinds, weights=[self.weights[k] for k in kinds])[0]


@dataclass
class ScriptedFault:
    kind: str
    method: str | None = None
    path: str | None = None  # regex on the API path
    retry_after: int = 1

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or re.search(self.path, path) is not None
        )


class Sandbox:
    """`now` is the sandbox's calendar clock (what "today" is for agreements and invoicing); `clock` the monotonic
    one its rate limit counts with. `settable_clock` lets `POST /_sandbox/clock` move `now` (standalone demos and
    tests). `cloud` answers as cloud-hosted CW does: 404 instead of 401 for bad credentials, and `Retry-After` as
    an HTTP date."""

    def __init__(
        self,
        *,
        seeded: bool = True,
        rate_limit_per_minute: int | None = None,
        rate_window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] | None = None,
        settable_clock: bool = False,
        cloud: bool = False,
        drop_mode: str = "raise",
        drop_seconds: float = 90.0,
    ) -> None:
        self._now = now or utc_now
        self._set_now: datetime | None = None
        self.settable_clock = settable_clock
        self.cloud = cloud
        self.store = SandboxStore(now=self.now)
        self.invoicing = AgreementInvoicing(self.store)
        self.store.prorate_fields = self.invoicing.prorate_fields
        if seeded:
            seed(self.store)
        self.faults = FaultPlan()
        self.scripted: deque[ScriptedFault] = deque()
        self.rate_limit_per_minute = rate_limit_per_minute
        # Counted in windows of `rate_window` seconds (CW's is a minute): the limit per window is the per-minute rate
        # scaled to it. Benchmarks use short windows so that the rate, not a minute's burst, bounds a run.
        self.rate_window = rate_window
        self.forbidden: set[tuple[str, str]] = set()  # (method, resource) pairs the API member may not do
        self.stats: Counter[str] = Counter()
        self.ignored_patch_paths: list[str] = []
        self._clock = clock
        self._window: deque[float] = deque()
        self._drop_mode = drop_mode
        self._drop_seconds = drop_seconds
        self._lock = asyncio.Lock()

    def now(self) -> datetime:
        return self._set_now if self._set_now is not None else self._now()

    def set_now(self, moment: datetime) -> None:
        """Pin the sandbox's calendar clock (what `POST /_sandbox/clock` does)."""
        if moment.tzinfo is None:
            raise ValueError("the sandbox clock needs a timezone-aware moment")
        self._set_now = moment.astimezone(UTC)

    # ------------------------------------------------------------------ clients
    def http_client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=SandboxTransport(self), **kwargs)

    def inject(
        self, kind: str, *, method: str | None = None, path: str | None = None, times: int = 1, retry_after: int = 1
    ) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULT_KINDS}")
        for _ in range(times):
            self.scripted.append(ScriptedFault(kind, method, path, retry_after))

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        origin = f"{scope.get('scheme', 'http')}://{headers.get('host', 'localhost')}"
        status, response_headers, payload = await self.handle(
            scope["method"], scope["path"], query, headers, body, origin=origin
        )
        raw = b"" if payload is None else json.dumps(payload).encode()
        header_list = [(k.encode(), v.encode()) for k, v in response_headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": header_list})
        await send({"type": "http.response.body", "body": raw})

    async def _drop(self) -> None:
        if self._drop_mode == "raise":
            raise ConnectionDropped
        await asyncio.sleep(self._drop_seconds)

    def _rate_limited(self) -> int | None:
        if not self.rate_limit_per_minute:
            return None
        now, window = self._clock(), self.rate_window
        while self._window and now - self._window[0] >= window:
            self._window.popleft()
        if len(self._window) >= max(1, round(self.rate_limit_per_minute * window / 60)):
            return max(1, math.ceil(window - (now - self._window[0])))
        self._window.append(now)
        return None

    async def handle(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes, *, origin: str = ""
    ) -> tuple[int, dict[str, str], Any]:
        if path.startswith("/_sandbox/"):
            return self._sandbox_only(method, path, body)
        if path.startswith("/login/companyinfo/"):
            self.stats["companyinfo"] += 1
            company = path.rsplit("/", 1)[-1]
            if company.lower() != SANDBOX_COMPANY:
                return (
                    404,
                    {"content-type": "application/json"},
                    {"code": "NotFound", "message": "Unknown company", "errors": None},
                )
            return (
                200,
                {"content-type": "application/json"},
                {
                    "CompanyName": "Sandbox MSP",
                    "Codebase": CODEBASE,
                    "VersionCode": "v2025.16",
                    "VersionNumber": "v4.6.2025.16",
                    "CompanyID": SANDBOX_COMPANY,
                    "IsCloud": "True" if self.cloud else "False",
                },
            )
        if not path.startswith(API_PREFIX):
            return _error(404, "NotFound", f"No route for {path}")
        api_path = path[len(API_PREFIX) :] or "/"
        self.stats["requests"] += 1
        self.stats[f"{method} {_route_label(api_path)}"] += 1
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        auth_error = _check_auth(headers, cloud=self.cloud)
        if auth_error is not None:
            return auth_error
        retry_in = self._rate_limited()
        if retry_in is not None:
            self.stats["throttled"] += 1
            return (
                429,
                {"content-type": "application/json", "retry-after": self._retry_after_header(retry_in)},
                {"error": "ConnectWiseAPI", "message": f"Too many requests. Please try again in {retry_in} seconds."},
            )
        fault = self._next_fault(method, api_path)
        retry_after = self.faults.retry_after
        if isinstance(fault, ScriptedFault):
            retry_after, fault = fault.retry_after, fault.kind
        if fault is not None:
            self.stats[f"fault:{fault}"] += 1
        if fault == "429":
            return (
                429,
                {"content-type": "application/json", "retry-after": self._retry_after_header(retry_after)},
                {
                    "error": "ConnectWiseAPI",
                    "message": f"Too many requests. Please try again in {retry_after} seconds.",
                },
            )
        if fault in ("500", "503"):
            return _error(int(fault), "ServerError", "An unexpected error occurred.")
        if fault == "timeout" or (fault == "lost_response" and method == "GET"):
            await self._drop()
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            async with self._lock:
                status, extra_headers, payload = self._dispatch(
                    method, api_path, _Query(params, query), headers, body, origin
                )
        except SandboxError as exc:
            return _error(exc.status, exc.code, exc.message, exc.errors)
        if fault == "lost_response":
            await self._drop()  # the write above is applied; the answer never arrives
        return status, {"content-type": MEDIA_TYPE, **extra_headers}, payload

    def _retry_after_header(self, seconds: int) -> str:
        """Seconds, or (cloud) an HTTP date that many seconds ahead, as CW's cloud front end writes it."""
        if not self.cloud:
            return str(seconds)
        return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)

    def _sandbox_only(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], Any]:
        """Routes real ConnectWise does not have: the calendar clock, what each invoice billed, request counts. For
        tests, demos and benchmarks only; the service never calls them."""
        json_type = {"content-type": "application/json"}
        if path == "/_sandbox/clock":
            if method == "POST":
                if not self.settable_clock:
                    return _error(403, "Forbidden", "Start the sandbox with --settable-clock to move its clock.")
                try:
                    moment = datetime.fromisoformat(str(_json(body).get("now", "")).replace("Z", "+00:00"))
                    self.set_now(moment)
                except (SandboxError, AttributeError, ValueError):
                    return _error(400, "InvalidObject", 'Send {"now": "2026-12-01T00:00:00Z"} (with a timezone).')
            elif method != "GET":
                return _error(405, "MethodNotAllowed", f"{method} is not allowed here")
            return 200, json_type, {"now": self.now().strftime("%Y-%m-%dT%H:%M:%SZ")}
        if path == "/_sandbox/stats" and method == "GET":  # requests served, throttled, writes (benchmarks)
            return 200, json_type, {**self.stats, "writes": self.store.writes}
        lines = re.fullmatch(r"/_sandbox/invoices/(\d+)/lines", path)
        if lines and method == "GET":
            try:
                return 200, json_type, [line.as_json() for line in self.invoicing.lines(int(lines.group(1)))]
            except SandboxError as exc:
                return _error(exc.status, exc.code, exc.message, exc.errors)
        return _error(404, "NotFound", f"No route for {method} {path}")

    def _next_fault(self, method: str, path: str) -> ScriptedFault | str | None:
        for index, scripted in enumerate(self.scripted):
            if scripted.matches(method, path):
                del self.scripted[index]
                return scripted
        return self.faults.draw()

    # ------------------------------------------------------------------ routing
    def _collections(self) -> list[tuple[re.Pattern[str], Collection, str]]:
        s = self.store
        return [
            (re.compile(r"^/company/companies"), s.companies, "company"),
            (re.compile(r"^/finance/agreements/types"), s.agreement_types, "agreementType"),
            (re.compile(r"^/finance/billingCycles"), s.billing_cycles, "billingCycle"),
            (re.compile(r"^/procurement/catalog"), s.catalog, "catalog"),
            (re.compile(r"^/procurement/categories"), s.categories, "category"),
            (re.compile(r"^/procurement/subcategories"), s.subcategories, "subcategory"),
            (re.compile(r"^/procurement/types"), s.product_types, "productType"),
            (re.compile(r"^/procurement/unitOfMeasures"), s.units_of_measure, "unitOfMeasure"),
        ]

    def _dispatch(
        self, method: str, path: str, params: _Query, headers: dict[str, str], body: bytes, origin: str
    ) -> tuple[int, dict[str, str], Any]:
        url = origin + API_PREFIX + path
        if path == "/system/info" and method == "GET":
            return (
                200,
                {},
                {
                    "version": "v2025.16.101234",
                    "isCloud": self.cloud,
                    "serverTimeZone": "Eastern Standard Time",
                    "licenseBits": [],
                    "cloudRegion": "NA",
                },
            )
        additions = re.fullmatch(r"/finance/agreements/(\d+)/additions(?:/(count|\d+))?", path)
        if additions:
            return self._additions(method, int(additions.group(1)), additions.group(2), params, headers, body, url)
        invoice = re.fullmatch(r"/finance/agreements/(\d+)/invoice", path)
        if invoice:
            if method != "POST":
                raise SandboxError(405, "MethodNotAllowed", f"{method} is not allowed here")
            self._deny("POST", "invoice")
            return 201, {}, self.invoicing.invoice(int(invoice.group(1)))
        agreement = re.fullmatch(r"/finance/agreements(?:/(count|\d+))?", path)
        if agreement:
            return self._agreements(method, agreement.group(1), params, headers, body, url)
        invoices = re.fullmatch(r"/finance/invoices(?:/(count|\d+))?", path)
        if invoices:
            return self._invoices(method, invoices.group(1), params, headers, url)
        recap = re.fullmatch(r"/finance/agreementrecap(/|/\d+)", path)
        if recap and method == "GET":
            self._deny("GET", "agreementRecap")
            if recap.group(1) == "/":
                rows = [self.invoicing.recap(a) for a in self.store.agreements.rows.values()]
                return _list(rows, params, headers, url, render=lambda r: r)
            return (
                200,
                {},
                _project(
                    self.invoicing.recap(self.store.agreements.get(int(recap.group(1)[1:]))), params.get("fields")
                ),
            )
        for pattern, collection, resource in self._collections():
            match = pattern.match(path)
            if match:
                rest = path[match.end() :]
                tail = re.fullmatch(r"/?|/(count|\d+)", rest)
                if tail is None:
                    break
                if collection is self.store.subcategories and rest == "" and method in ("GET", "POST"):
                    break  # CW's list path for subcategories ends in a slash
                return self._generic(method, collection, resource, tail.group(1), params, headers, body, url)
        raise SandboxError(404, "NotFound", f"No route for {method} {path}")

    def _agreements(
        self, method: str, tail: str | None, params: _Query, headers: dict[str, str], body: bytes, url: str
    ) -> tuple[int, dict[str, str], Any]:
        self._deny(method, "agreement")
        store, render = self.store, self.invoicing.render_agreement

        rows = list(store.agreements.rows.values())
        if "agreementstatus" in params.get("conditions", "").lower():  # the derived status can be filtered on
            rows = [{**r, "agreementStatus": store.agreement_status(r)} for r in rows]
        if tail == "count" and method == "GET":
            return 200, {}, {"count": len(_filter(rows, params))}
        if tail is None:
            if method == "GET":
                return _list(rows, params, headers, url, render=render)
            if method == "POST":
                return 201, {}, render(store.create_agreement(_json(body)))
            raise SandboxError(405, "MethodNotAllowed", f"{method} is not allowed here")
        record = store.agreements.get(int(tail))
        if method == "GET":
            return 200, {}, _project(render(record), params.get("fields"))
        if method == "PATCH":
            self.ignored_patch_paths += store.patch_agreement(record, _json(body))
            return 200, {}, render(record)
        if method == "DELETE":
            del store.agreements.rows[record["id"]]
            store.writes += 1
            return 204, {}, None
        raise SandboxError(405, "MethodNotAllowed", f"{method} is not allowed here")

    def _invoices(
        self, method: str, tail: str | None, params: _Query, headers: dict[str, str], url: str
    ) -> tuple[int, dict[str, str], Any]:
        self._deny(method, "invoice")
        rows = list(self.store.invoices.rows.values())
        if method == "GET" and tail == "count":
            return 200, {}, {"count": len(_filter(rows, params))}
        if method == "GET" and tail is None:
            return _list(rows, params, headers, url, render=lambda r: r)
        if tail not in (None, "count"):
            record = self.store.invoices.get(int(tail))
            if method == "GET":
                return 200, {}, _project(record, params.get("fields"))
            if method == "DELETE":  # in CW's API, not in the service's subset: tests reopen a period with it
                self.invoicing.delete(record["id"])
                return 204, {}, None
        raise SandboxError(405, "MethodNotAllowed", f"{method} is not allowed here")

    def _deny(self, method: str, resource: str) -> None:
        if (method, resource) in self.forbidden:
            raise SandboxError(403, "Forbidden", f"You do not have permission to {method} {resource} records.")

    def _generic(
        self,
        method: str,
        collection: Collection,
        resource: str,
        tail: str | None,
        params: _Query,
        headers: dict[str, str],
        body: bytes,
        url: str,
    ) -> tuple[int, dict[str, str], Any]:
        self._deny(method, resource)
        rows = list(collection.rows.values())
        if tail == "count" and method == "GET":
            return 200, {}, {"count": len(_filter(rows, params))}
        if tail is None:
            if method == "GET":
                return _list(rows, params, headers, url, render=lambda r: r)
            if method == "POST":
                record = collection.validate(_json(body), partial=False)
                if collection is self.store.catalog:
                    self._check_catalog(record)
                self.store.writes += 1
                return 201, {}, collection.insert(record)
            raise SandboxError(405, "MethodNotAllowed", f"{method} is not allowed here")
        record = collection.get(int(tail))
        if method == "GET":
            return 200, {}, _project(record, params.get("fields"))
        if method == "PATCH":
            self.ignored_patch_paths += self.store.patch(collection, record, _json(body))
            return 200, {}, record
        if method == "DELETE":
            del collection.rows[record["id"]]
            self.store.writes += 1
            return 204, {}, None
        raise SandboxError(405, "MethodNotAllowed", f"{method} is not allowed here")

    def _check_catalog(self, record: dict[str, Any]) -> None:
        if any(r["identifier"].lower() == record["identifier"].lower() for r in self.store.catalog.rows.values()):
            raise SandboxError(
                400,
                "InvalidObject",
                "catalogItem object is invalid",
                [
                    {
                        "code": "ObjectExists",
                        "message": "Product ID already in use.",
                        "resource": "catalogItem",
                        "field": "identifier",
                    }
                ],
            )
        for name, collection in (("subcategory", self.store.subcategories), ("type", self.store.product_types)):
            ref = record.get(name) or {}
            if ref.get("id") not in collection.rows:
                raise SandboxError(
                    400,
                    "InvalidObject",
                    "catalogItem object is invalid",
                    [
                        {
                            "code": "InvalidObject",
                            "message": f"The {name} could not be found.",
                            "resource": "catalogItem",
                            "field": name,
                        }
                    ],
                )
        record.setdefault("productClass", "NonInventory")
        record.setdefault("inactiveFlag", False)

    def _additions(
        self,
        method: str,
        agreement_id: int,
        tail: str | None,
        params: _Query,
        headers: dict[str, str],
        body: bytes,
        url: str,
    ) -> tuple[int, dict[str, str], Any]:
        self._deny(method, "addition")
        store = self.store
        if tail == "count" and method == "GET":
            return 200, {}, {"count": len(_filter(store.additions_of(agreement_id), params))}
        if tail is None:
            if method == "GET":
                return _list(store.additions_of(agreement_id), params, headers, url, render=store.render_addition)
            if method == "POST":
                return 201, {}, store.render_addition(store.create_addition(agreement_id, _json(body)))
            raise SandboxError(405, "MethodNotAllowed", f"{method} is not allowed here")
        record = store.addition(agreement_id, int(tail))
        if method == "GET":
            return 200, {}, _project(store.render_addition(record), params.get("fields"))
        if method == "PATCH":
            self.ignored_patch_paths += store.patch_addition(agreement_id, record, _json(body))
            return 200, {}, store.render_addition(record)
        if method == "DELETE":
            del store.additions.rows[record["id"]]
            store.writes += 1
            return 204, {}, None
        raise SandboxError(405, "MethodNotAllowed", f"{method} is not allowed here")


# ---------------------------------------------------------------------- helpers
def _route_label(path: str) -> str:
    return re.sub(r"/\d+", "/{id}", path)


def _error(
    status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None
) -> tuple[int, dict[str, str], Any]:
    return status, {"content-type": "application/json"}, {"code": code, "message": message, "errors": errors}


class _Query(dict[str, str]):
    """The query parameters, and the query string exactly as sent (CW builds its `Link` header from it)."""

    def __init__(self, params: dict[str, str], raw: str) -> None:
        super().__init__(params)
        self.raw = raw

    def with_param(self, name: str, value: int) -> str:
        """The query as sent without `name`, and `name=value` appended last, as CW writes its links (a widely used
        SDK reads the page number from the end of the link)."""
        kept = [part for part in self.raw.split("&") if part and part.split("=", 1)[0] != name]
        return "&".join([*kept, f"{name}={value}"])


def _check_auth(headers: dict[str, str], *, cloud: bool = False) -> tuple[int, dict[str, str], Any] | None:
    auth = headers.get("authorization", "")
    try:
        decoded = base64.b64decode(auth.removeprefix("Basic "), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    login, _, private_key = decoded.partition(":")
    company, _, public_key = login.partition("+")
    # The login company is case-insensitive; the keys are compared exactly.
    valid = (
        auth.startswith("Basic ")
        and company.lower() == SANDBOX_COMPANY
        and public_key == SANDBOX_PUBLIC_KEY
        and private_key == SANDBOX_PRIVATE_KEY
    )
    if not valid:
        if cloud:  # cloud CW answers bad credentials as if the address did not exist (SEMANTICS §1.4)
            return _error(404, "NotFound", "The requested resource could not be found.")
        return _error(401, "Unauthorized", "The API member's credentials are not valid.")
    if not headers.get("clientid", "").strip():
        return _error(400, "InvalidClientId", "A clientId header is required on every request.")
    return None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SandboxError(400, "InvalidObject", "The request body is not valid JSON.") from None


def _filter(rows: list[dict[str, Any]], params: dict[str, str]) -> list[dict[str, Any]]:
    conditions = params.get("conditions", "").strip()
    if not conditions:
        return rows
    try:
        node = parse(conditions)
    except ConditionSyntaxError as exc:
        raise SandboxError(400, "InvalidConditions", f"Invalid conditions: {exc}") from None
    return [r for r in rows if evaluate(node, r)]


def _project(record: dict[str, Any], fields: str | None) -> dict[str, Any]:
    if not fields:
        return record
    out: dict[str, Any] = {}
    for name in (f.strip() for f in fields.split(",") if f.strip()):
        head, _, rest = name.partition("/")
        if head not in record:
            continue
        if rest and isinstance(record[head], dict):
            out.setdefault(head, {})[rest] = record[head].get(rest)
        else:
            out[head] = record[head]
    return out


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, bool | int | float):
        return (1, float(value))
    return (2, str(value).lower())


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name, "")
    if raw == "":
        return default
    if not raw.lstrip("-").isdigit():
        raise SandboxError(400, "InvalidRequest", f"{name} must be an integer")
    return int(raw)


def _list(
    rows: list[dict[str, Any]],
    params: _Query,
    headers: dict[str, str],
    base: str,
    *,
    render: Callable[[dict[str, Any]], dict[str, Any]],
) -> tuple[int, dict[str, str], Any]:
    """A page of rows with CW's absolute `Link` header (navigable or forward-only)."""
    page_size = max(1, min(_int_param(params, "pageSize", 25), 1000))
    matched = _filter(rows, params)
    if headers.get("pagination-type", "").lower() == "forward-only":
        if params.get("orderBy"):
            raise SandboxError(400, "InvalidRequest", "orderBy is not allowed with forward-only pagination")
        after = _int_param(params, "pageId", 0)
        page = sorted((r for r in matched if r["id"] > after), key=lambda r: r["id"])[:page_size]
        link = f'<{base}?{params.with_param("pageId", page[-1]["id"] if page else after)}>; rel="next"'
        return 200, {"link": link}, [_project(render(r), params.get("fields")) for r in page]
    order = params.get("orderBy", "").strip()
    ordered = sorted(matched, key=lambda r: r["id"])
    for clause in reversed([c.strip() for c in order.split(",") if c.strip()]):
        parts = clause.split()
        reverse = len(parts) > 1 and parts[1].lower() == "desc"
        field_path = parts[0]

        def key(row: dict[str, Any], path: str = field_path) -> tuple[int, Any]:
            return _sort_key(_resolve(row, path))

        ordered.sort(key=key, reverse=reverse)
    page_number = max(1, _int_param(params, "page", 1))
    last_page = max(1, math.ceil(len(ordered) / page_size))
    page = ordered[(page_number - 1) * page_size : page_number * page_size]
    links = []

    def url(number: int) -> str:
        return f"{base}?{params.with_param('page', number)}"

    links.append(f'<{url(1)}>; rel="first"')
    if page_number > 1:
        links.append(f'<{url(page_number - 1)}>; rel="prev"')
    if page_number < last_page:
        links.append(f'<{url(page_number + 1)}>; rel="next"')
    links.append(f'<{url(last_page)}>; rel="last"')
    return 200, {"link": ", ".join(links)}, [_project(render(r), params.get("fields")) for r in page]


def _resolve(record: dict[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class SandboxTransport(httpx.AsyncBaseTransport):
    """In-process transport into a `Sandbox`: a dropped connection surfaces as `httpx.ReadTimeout`."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._inner = httpx.ASGITransport(app=sandbox)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except ConnectionDropped:
            raise httpx.ReadTimeout("the sandbox dropped the connection", request=request) from None
