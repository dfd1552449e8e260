"""The sandbox's state: ConnectWise records as plain dicts in CW's own shapes, with ids, `_info` and the fields
CW computes (extPrice, extCost, margin, billedQuantity, agreementId, uom, an agreement's status).

"Now" comes from the sandbox's clock (`SandboxStore(now=…)`), so tests and demos can move through months.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

API_MEMBER = "sandbox-public"


def utc_now() -> datetime:
    return datetime.now(UTC)


def cw_text(moment: datetime) -> str:
    """A moment as CW writes it: `2026-11-16T14:03:00Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_of(value: Any) -> date | None:
    """The calendar day of a CW date-time field (`2026-11-16T00:00:00Z`), None when it is not set."""
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).date()


class SandboxError(Exception):
    """Rendered as a CW error body: {code, message, errors}."""

    def __init__(self, status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors


def invalid(resource: str, field_name: str, code: str, message: str) -> SandboxError:
    return SandboxError(
        400,
        "InvalidObject",
        f"{resource} object is invalid",
        [{"code": code, "message": message, "resource": resource, "field": field_name}],
    )


@dataclass(frozen=True)
class FieldType:
    kind: str  # number, string, bool, datetime, ref, enum, object, array
    required: bool = False
    max_length: int | None = None
    enum: tuple[str, ...] = ()
    computed: bool = False
    minimum: float | None = None  # numbers: the smallest value CW accepts


N, S, B, D, R = FieldType("number"), FieldType("string"), FieldType("bool"), FieldType("datetime"), FieldType("ref")

ADDITION_FIELDS: dict[str, FieldType] = {
    "product": FieldType("ref", required=True),
    "quantity": FieldType("number", minimum=0),
    "lessIncluded": FieldType("number", minimum=0),
    "unitPrice": N,
    "unitCost": N,
    "billCustomer": FieldType("enum", required=True, enum=("Billable", "DoNotBill", "NoCharge")),
    "effectiveDate": D,
    "cancelledDate": D,
    "taxableFlag": B,
    "serialNumber": FieldType("string", max_length=50),
    "invoiceDescription": FieldType("string", max_length=6000),
    "purchaseItemFlag": B,
    "specialOrderFlag": B,
    "description": S,
    "sequenceNumber": N,
    "prorateCurrentPeriodFlag": B,
    "opportunity": R,
    "invoiceGrouping": R,
    "customFields": FieldType("array"),
    "agreementId": FieldType("number", computed=True),
    "billedQuantity": FieldType("number", computed=True),
    "uom": FieldType("string", computed=True),
    "extPrice": FieldType("number", computed=True),
    "extCost": FieldType("number", computed=True),
    "margin": FieldType("number", computed=True),
    "prorateCost": FieldType("number", computed=True),
    "proratePrice": FieldType("number", computed=True),
    "extendedProrateCost": FieldType("number", computed=True),
    "extendedProratePrice": FieldType("number", computed=True),
    "agreementStatus": FieldType("string", computed=True),
}

CATALOG_FIELDS: dict[str, FieldType] = {
    "identifier": FieldType("string", required=True, max_length=75),
    "description": FieldType("string", required=True, max_length=60),
    "customerDescription": FieldType("string", required=True, max_length=6000),
    "subcategory": FieldType("ref", required=True),
    "type": FieldType("ref", required=True),
    "category": R,
    "unitOfMeasure": R,
    "inactiveFlag": B,
    "productClass": FieldType("enum", enum=("Agreement", "Bundle", "Inventory", "NonInventory", "Service")),
    "price": N,
    "cost": N,
    "taxableFlag": B,
    "notes": S,
    "manufacturerPartNumber": FieldType("string", max_length=50),
    "vendorSku": FieldType("string", max_length=50),
    "integrationXRef": FieldType("string", max_length=50),
}

COMPANY_FIELDS: dict[str, FieldType] = {
    "identifier": FieldType("string", required=True, max_length=156),
    "name": FieldType("string", required=True, max_length=156),
    "status": R,
    "deletedFlag": B,
    "types": FieldType("array"),
    "addressLine1": FieldType("string", max_length=50),
    "addressLine2": FieldType("string", max_length=50),
    "city": FieldType("string", max_length=50),
    "state": FieldType("string", max_length=50),
    "zip": FieldType("string", max_length=12),
    "phoneNumber": FieldType("string", max_length=30),
    "faxNumber": FieldType("string", max_length=30),
    "website": FieldType("string", max_length=255),
    "leadSource": FieldType("string", max_length=50),
    **{f"userDefinedField{n}": FieldType("string", max_length=50) for n in range(1, 11)},
}

# What a POST or PATCH of an agreement may set; `agreementStatus` and `nextInvoiceDate` are derived.
AGREEMENT_FIELDS: dict[str, FieldType] = {
    "name": FieldType("string", required=True, max_length=100),
    "type": FieldType("ref", required=True),
    "company": FieldType("ref", required=True),
    "contact": FieldType("ref", required=True),
    "customerPO": FieldType("string", max_length=50),
    "reasonCancelled": FieldType("string", max_length=100),
    "workOrder": FieldType("string", max_length=20),
    "internalNotes": S,
    "parentAgreement": R,
    "startDate": D,
    "endDate": D,
    "noEndingDateFlag": B,
    "cancelledFlag": B,
    "dateCancelled": D,
    "billingCycle": R,
    "billStartDate": D,
    "billAmount": N,
    "prorateFlag": B,
    "invoiceProratedAdditionsFlag": B,
    "invoicingCycle": FieldType("enum", enum=("ContractYear", "CalendarYear")),
    "billTime": FieldType("enum", enum=("Billable", "DoNotBill", "NoCharge", "NoDefault")),
    "billExpenses": FieldType("enum", enum=("Billable", "DoNotBill", "NoCharge", "NoDefault")),
    "billProducts": FieldType("enum", enum=("Billable", "DoNotBill", "NoCharge", "NoDefault")),
    "employeeCompRate": FieldType("enum", enum=("Actual", "Hourly")),
    "taxable": B,
    "invoiceDescription": S,
    "agreementStatus": FieldType("string", computed=True),
    "nextInvoiceDate": FieldType("string", computed=True),
}


def _check_value(resource: str, name: str, spec: FieldType, value: Any) -> Any:
    if value is None:
        if spec.required:
            raise invalid(resource, name, "NullValue", f"The field {name} is required.")
        return None
    ok = {
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "enum": isinstance(value, str) and value in spec.enum,
        "bool": isinstance(value, bool),
        "ref": isinstance(value, dict),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
        "datetime": isinstance(value, str),
    }[spec.kind]
    if spec.kind == "datetime" and ok:
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            ok = False
    if not ok:
        detail = f"one of {', '.join(spec.enum)}" if spec.kind == "enum" else f"a {spec.kind}"
        raise invalid(resource, name, "InvalidValue", f"The field {name} must be {detail}.")
    if spec.minimum is not None and value < spec.minimum:
        raise invalid(resource, name, "OutOfRange", f"The field {name} must be at least {spec.minimum:g}.")
    if spec.max_length is not None and len(value) > spec.max_length:
        raise invalid(
            resource,
            name,
            "OutOfRange",
            f"The field {name} must be a string with a maximum length of {spec.max_length}.",
        )
    return value


@dataclass
class Collection:
    resource: str
    fields: dict[str, FieldType] | None = None  # None: no write validation (setup tables)
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1
    now: Callable[[], datetime] = utc_now

    def insert(self, record: dict[str, Any]) -> dict[str, Any]:
        # CW's serializer omits null fields rather than sending `null`.
        record = {k: v for k, v in copy.deepcopy(record).items() if v is not None}
        record["id"] = self.next_id
        self.next_id += 1
        self.touch(record)
        self.rows[record["id"]] = record
        return record

    def touch(self, record: dict[str, Any]) -> None:
        record["_info"] = {"lastUpdated": cw_text(self.now()), "updatedBy": API_MEMBER}

    def get(self, record_id: int) -> dict[str, Any]:
        record = self.rows.get(record_id)
        if record is None:
            raise SandboxError(404, "NotFound", f"{self.resource} ID {record_id} not found", None)
        return record

    def validate(self, body: dict[str, Any], *, partial: bool) -> dict[str, Any]:
        if self.fields is None:
            return body
        clean: dict[str, Any] = {}
        for name, value in body.items():
            spec = self.fields.get(name)
            if spec is None or spec.computed or name in ("id", "_info"):
                continue  # CW ignores unknown and read-only fields on write
            clean[name] = _check_value(self.resource, name, spec, value)
        if not partial:
            for name, spec in self.fields.items():
                if spec.required and clean.get(name) is None:
                    raise invalid(self.resource, name, "NullValue", f"The field {name} is required.")
        return clean


class SandboxStore:
    """All records of one sandbox instance."""

    def __init__(self, *, now: Callable[[], datetime] = utc_now) -> None:
        self.now = now

        def collection(resource: str, fields: dict[str, FieldType] | None = None) -> Collection:
            return Collection(resource, fields, now=lambda: self.now())

        self.companies = collection("company", COMPANY_FIELDS)
        self.agreements = collection("agreement", AGREEMENT_FIELDS)
        self.agreement_types = collection("agreementType")
        self.billing_cycles = collection("billingCycle")
        self.catalog = collection("catalogItem", CATALOG_FIELDS)
        self.categories = collection("category")
        self.subcategories = collection("subCategory")
        self.product_types = collection("productType")
        self.units_of_measure = collection("unitOfMeasure")
        self.additions = collection("addition", ADDITION_FIELDS)
        self.invoices = collection("invoice")
        self.additions_by_agreement: dict[int, list[int]] = {}
        self.writes = 0
        # The prorated fields of an addition (set by the invoicing model, which knows the agreement's periods).
        self.prorate_fields: Callable[[dict[str, Any]], dict[str, float]] = lambda _record: {}

    def today(self) -> date:
        return self.now().astimezone(UTC).date()

    # ------------------------------------------------------------------ agreements
    def cycle_of(self, agreement: dict[str, Any]) -> str | None:
        """The agreement's `billingOptions` (Monthly, Quarterly, …, NotRecurring), None without a billing cycle."""
        cycle_id = (agreement.get("billingCycle") or {}).get("id")
        cycle = self.billing_cycles.rows.get(cycle_id) if isinstance(cycle_id, int) else None
        return None if cycle is None else cycle.get("billingOptions")

    def agreement_status(self, agreement: dict[str, Any]) -> str:
        """CW derives it: Cancelled, Expired (ended, unless it has no ending date), Inactive (starts in the
        future), else Active."""
        today = self.today()
        if agreement.get("cancelledFlag"):
            return "Cancelled"
        end = day_of(agreement.get("endDate"))
        if end is not None and end < today and not agreement.get("noEndingDateFlag"):
            return "Expired"
        start = day_of(agreement.get("startDate"))
        if start is not None and start > today:
            return "Inactive"
        return "Active"

    def create_agreement(self, body: Any) -> dict[str, Any]:
        clean = self.agreements.validate(_object(body, "agreement"), partial=False)
        for name, collection in (("company", self.companies), ("type", self.agreement_types)):
            ref_id = clean[name].get("id")
            if not isinstance(ref_id, int) or ref_id not in collection.rows:
                raise invalid("agreement", name, "InvalidObject", f"The {name} could not be found.")
        clean.setdefault("startDate", cw_text(self.now())[:10] + "T00:00:00Z")
        clean.setdefault("noEndingDateFlag", clean.get("endDate") is None)
        clean.setdefault("cancelledFlag", False)
        clean.setdefault("prorateFlag", False)
        clean.setdefault("billStartDate", clean["startDate"])
        self._check_cancellation(clean)
        self.writes += 1
        return self.agreements.insert(clean)

    def patch_agreement(self, record: dict[str, Any], operations: Any) -> list[str]:
        was_cancelled = bool(record.get("cancelledFlag"))
        ignored = self.patch(self.agreements, record, operations)
        if record.get("cancelledFlag") and not was_cancelled:
            self._check_cancellation(record)
        return ignored

    def _check_cancellation(self, record: dict[str, Any]) -> None:
        if record.get("cancelledFlag"):
            record.setdefault("dateCancelled", cw_text(self.now()))

    def refusal_for_additions(self, agreement: dict[str, Any]) -> SandboxError | None:
        """Why CW refuses to add or change additions on this agreement, if it does."""
        status = self.agreement_status(agreement)
        if status in ("Cancelled", "Expired"):
            return invalid(
                "addition",
                "agreementId",
                "InvalidObject",
                f"Agreement {agreement['id']} is {status.lower()}; its additions cannot be added or changed.",
            )
        cycle = self.cycle_of(agreement)
        if cycle is None or cycle == "NotRecurring":
            return invalid(
                "addition",
                "agreementId",
                "InvalidObject",
                f"Agreement {agreement['id']} is not a recurring agreement; it cannot have additions.",
            )
        return None

    # ------------------------------------------------------------------ derived addition fields
    def render_addition(self, record: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(record)
        quantity = Decimal(str(out.get("quantity") or 0))
        less = Decimal(str(out.get("lessIncluded") or 0))
        price = Decimal(str(out.get("unitPrice") or 0))
        cost = Decimal(str(out.get("unitCost") or 0))
        out["billedQuantity"] = float(quantity - less)
        out["extPrice"] = float(quantity * price)
        out["extCost"] = float(quantity * cost)
        out["margin"] = float(quantity * (price - cost))
        agreement = self.agreements.rows.get(out["agreementId"])
        out["agreementStatus"] = self.agreement_status(agreement) if agreement else "Cancelled"
        out.update(self.prorate_fields(record))
        return out

    def resolve_product(self, ref: dict[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] | None
        if isinstance(ref.get("id"), int):
            item = self.catalog.rows.get(ref["id"])
        else:
            item = next((r for r in self.catalog.rows.values() if r["identifier"] == ref.get("identifier")), None)
        if item is None:
            raise invalid("addition", "product", "InvalidObject", "The product could not be found.")
        if item.get("inactiveFlag"):
            raise invalid("addition", "product", "InvalidObject", "The product is inactive.")
        if item.get("productClass") == "Bundle":
            raise invalid("addition", "product", "InvalidObject", "A bundle cannot be added to an agreement.")
        return item

    def create_addition(self, agreement_id: int, body: Any) -> dict[str, Any]:
        agreement = self.agreements.get(agreement_id)
        clean = self.additions.validate(_object(body, "addition"), partial=False)
        refusal = self.refusal_for_additions(agreement)
        if refusal is not None:
            raise refusal
        item = self.resolve_product(clean["product"])
        record: dict[str, Any] = {name: None for name, spec in ADDITION_FIELDS.items() if not spec.computed}
        record.update(clean)
        record["product"] = {"id": item["id"], "identifier": item["identifier"]}
        record["agreementId"] = agreement_id
        record["uom"] = (item.get("unitOfMeasure") or {}).get("name")
        if record["quantity"] is None:
            record["quantity"] = 0
        if record["lessIncluded"] is None:
            record["lessIncluded"] = 0
        for money, source in (("unitPrice", "price"), ("unitCost", "cost")):
            if record[money] is None:
                record[money] = item.get(source) or 0
        if record["effectiveDate"] is None:
            record["effectiveDate"] = cw_text(self.now())[:10] + "T00:00:00Z"
        record["taxableFlag"] = bool(record["taxableFlag"])
        _check_addition_dates(record)
        self.writes += 1
        inserted = self.additions.insert(record)
        self.additions_by_agreement.setdefault(agreement_id, []).append(inserted["id"])
        return inserted

    def patch_addition(self, agreement_id: int, record: dict[str, Any], operations: Any) -> list[str]:
        refusal = self.refusal_for_additions(self.agreements.get(agreement_id))
        if refusal is not None:
            raise refusal
        return self.patch(self.additions, record, operations, check=_check_addition_dates)

    def additions_of(self, agreement_id: int) -> list[dict[str, Any]]:
        self.agreements.get(agreement_id)
        rows = self.additions.rows
        return [rows[i] for i in self.additions_by_agreement.get(agreement_id, ()) if i in rows]

    def addition(self, agreement_id: int, addition_id: int) -> dict[str, Any]:
        record = self.additions.get(addition_id)
        if record["agreementId"] != agreement_id:
            raise SandboxError(404, "NotFound", f"addition ID {addition_id} not found", None)
        return record

    def patch(
        self,
        collection: Collection,
        record: dict[str, Any],
        operations: Any,
        *,
        check: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[str]:
        """Apply CW PATCH operations (all or nothing). Returns the sub-paths CW would silently ignore (its 'false
        200')."""
        if not isinstance(operations, list) or not operations:
            raise SandboxError(400, "InvalidObject", "PATCH body must be a non-empty array of operations", None)
        ignored: list[str] = []
        changes: dict[str, Any] = {}
        for op in operations:
            if (
                not isinstance(op, dict)
                or op.get("op") not in ("add", "replace", "remove")
                or not isinstance(op.get("path"), str)
            ):
                raise SandboxError(400, "InvalidObject", "Each operation needs op (add|replace|remove) and path", None)
            path = op["path"].lstrip("/")
            if "/" in path:
                ignored.append(path)  # CW: a sub-path such as company/identifier "may return a false 200"
                continue
            value = None if op["op"] == "remove" else op.get("value")
            changes[path] = value
        unknown = [p for p in changes if collection.fields is not None and p not in collection.fields]
        if unknown:
            raise invalid(collection.resource, unknown[0], "InvalidField", f"Unknown field {unknown[0]}.")
        clean = collection.validate(changes, partial=True) if collection.fields else changes
        if collection is self.additions and "product" in clean:
            item = self.resolve_product(clean["product"])
            clean["product"] = {"id": item["id"], "identifier": item["identifier"]}
        merged = dict(record)
        for name, value in clean.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        if check is not None:
            check(merged)
        record.clear()
        record.update(merged)
        collection.touch(record)
        self.writes += 1
        return ignored


def _object(body: Any, resource: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise SandboxError(400, "InvalidObject", f"The {resource} must be a JSON object.")
    return body


def _check_addition_dates(record: dict[str, Any]) -> None:
    effective, cancelled = day_of(record.get("effectiveDate")), day_of(record.get("cancelledDate"))
    if effective is not None and cancelled is not None and cancelled < effective:
        raise invalid(
            "addition", "cancelledDate", "InvalidValue", "The cancelled date cannot be before the effective date."
        )


def seed(store: SandboxStore) -> None:
    """A few demo companies, agreements and a catalog: enough to walk the whole story."""
    for name, identifier, options in (
        ("Monthly", "M", "Monthly"),
        ("Quarterly", "Q", "Quarterly"),
        ("Semi-Annual", "S", "SemiAnnual"),
        ("Annual", "A", "Yearly"),
        ("One Time", "OT", "NotRecurring"),
    ):
        store.billing_cycles.insert(
            {"name": name, "identifier": identifier, "billingOptions": options, "defaultFlag": name == "Monthly"}
        )
    managed = store.agreement_types.insert(
        {
            "name": "Managed Services",
            "employeeCompRate": "Actual",
            "employeeCompNotExceed": "Billing",
            "invoicingCycle": "ContractYear",
            "billTime": "Billable",
            "billExpenses": "Billable",
            "billProducts": "Billable",
            "prorateFlag": False,
        }
    )
    category = store.categories.insert({"name": "Software", "inactiveFlag": False})
    store.categories.insert({"name": "Hardware", "inactiveFlag": False})
    sub = store.subcategories.insert(
        {"name": "Security Licenses", "inactiveFlag": False, "category": {"id": category["id"], "name": "Software"}}
    )
    store.subcategories.insert(
        {"name": "Backup", "inactiveFlag": False, "category": {"id": category["id"], "name": "Software"}}
    )
    ptype = store.product_types.insert({"name": "Non-Inventory", "inactiveFlag": False, "typeXref": "NonInventoryPart"})
    store.product_types.insert({"name": "Service", "inactiveFlag": False, "typeXref": "Service"})
    uom = store.units_of_measure.insert({"name": "License", "inactiveFlag": False})
    store.units_of_measure.insert({"name": "Each", "inactiveFlag": False})
    catalog_common = {
        "subcategory": {"id": sub["id"], "name": sub["name"]},
        "type": {"id": ptype["id"], "name": ptype["name"]},
        "category": {"id": category["id"], "name": "Software"},
        "unitOfMeasure": {"id": uom["id"], "name": "License"},
        "inactiveFlag": False,
        "taxableFlag": False,
    }
    store.catalog.insert(
        {
            "identifier": "VEND-EDR",
            "description": "Vendor EDR license",
            "customerDescription": "Endpoint protection, per device per month",
            "productClass": "NonInventory",
            "price": 3.0,
            "cost": 1.25,
            **catalog_common,
        }
    )
    store.catalog.insert(
        {
            "identifier": "VEND-BUNDLE",
            "description": "Vendor bundle",
            "customerDescription": "A bundle (cannot be an agreement addition)",
            "productClass": "Bundle",
            "price": 10.0,
            "cost": 4.0,
            **catalog_common,
        }
    )
    monthly = {"id": 1, "name": "Monthly"}
    active = {"id": 1, "name": "Active"}
    for identifier, name in (
        ("CONTOSO", "Contoso Ltd"),
        ("FABRIKAM", "Fabrikam Inc"),
        ("NORTHWIND", "Northwind Traders"),
        ("ADATUM", "Adatum Corporation"),
    ):
        company = store.companies.insert(
            {
                "identifier": identifier,
                "name": name,
                "status": active,
                "deletedFlag": False,
                "types": [{"id": 1, "name": "Client"}],
            }
        )
        store.agreements.insert(
            {
                "name": "Managed Services",
                "type": {"id": managed["id"], "name": managed["name"]},
                "company": {"id": company["id"], "identifier": identifier, "name": name},
                "contact": {"id": company["id"], "name": f"{name} Billing"},
                "startDate": "2026-01-01T00:00:00Z",
                "noEndingDateFlag": True,
                "cancelledFlag": False,
                "billingCycle": monthly,
                "billStartDate": "2026-01-01T00:00:00Z",
                "prorateFlag": False,
                "invoicingCycle": "ContractYear",
                "billTime": "Billable",
                "billExpenses": "Billable",
                "billProducts": "Billable",
                "employeeCompRate": "Actual",
            }
        )
