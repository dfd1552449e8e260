"""The one command-line entry point: `cw-billing-sync <command>`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from app.settings import ConfigurationError, Settings, load_settings

OPENAPI_PATH = Path("openapi/openapi.json")


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigurationError as exc:
        raise SystemExit(f"configuration error: {exc}") from None


def _with_session(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> Any:
    from app.context import AppContext

    async def run() -> Any:
        ctx = AppContext.build(settings)
        try:
            async with ctx.sessionmaker() as session, session.begin():
                return await work((ctx, session))
        finally:
            await ctx.engine.dispose()

    return asyncio.run(run())


def cmd_migrate(_args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade_to_head
    from app.db.session import create_engine

    settings = _settings()

    async def run() -> None:
        engine = create_engine(settings.database_url)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print("database migrated to head")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    if not args.no_migrate:
        cmd_migrate(args)
    host, port = args.host or settings.host, args.port or settings.port
    print(f"serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )
    return 0


def cmd_tenant_create(args: argparse.Namespace) -> int:
    from app.services.tenants import create_tenant

    async def work(pair: Any) -> Any:
        ctx, session = pair
        return await create_tenant(session, box=ctx.secrets, name=args.name, allow_same_name=args.allow_same_name)

    created = _with_session(_settings(), work)
    values = {
        "tenant_id": created.tenant_id,
        "client_id": created.client_id,
        "client_secret": created.client_secret,
        "webhook_secret": created.webhook_secret,
    }
    if args.json:
        print(json.dumps(values))
    else:
        print(f"tenant created: {args.name}")
        for key, value in values.items():
            print(f"  {key:15} {value}")
        print("The client secret and webhook secret are shown once; store them now.")
    return 0


def cmd_tenant_list(args: argparse.Namespace) -> int:
    from app.services.tenants import list_tenants

    async def work(pair: Any) -> Any:
        _ctx, session = pair
        return [
            {"tenant_id": t.id, "name": t.name, "billing_enabled": t.billing_enabled, "created_at": t.created_at}
            for t in await list_tenants(session)
        ]

    rows = _with_session(_settings(), work)
    if args.json:
        print(json.dumps(rows, default=str))
    else:
        for row in rows:
            print(f"{row['tenant_id']}  {row['name']}  (billing {'on' if row['billing_enabled'] else 'off'})")
    return 0


def cmd_client_list(args: argparse.Namespace) -> int:
    from app.services.tenants import list_clients

    async def work(pair: Any) -> Any:
        _ctx, session = pair
        return [
            {"client_id": c.client_id, "name": c.name, "created_at": c.created_at, "revoked_at": c.revoked_at}
            for c in await list_clients(session, args.tenant)
        ]

    rows = _with_session(_settings(), work)
    if args.json:
        print(json.dumps(rows, default=str))
    else:
        for row in rows:
            state = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "active"
            print(f"{row['client_id']}  {row['name']}  ({state})")
    return 0


def cmd_client_revoke(args: argparse.Namespace) -> int:
    from app.services.tenants import revoke_client

    async def work(pair: Any) -> Any:
        ctx, session = pair
        client = await revoke_client(session, client_id=args.client_id, now=ctx.now())
        return client.client_id

    print(f"revoked {_with_session(_settings(), work)}: its tokens no longer work")
    return 0


def cmd_client_create(args: argparse.Namespace) -> int:
    from app.services.tenants import create_client

    async def work(pair: Any) -> Any:
        _ctx, session = pair
        return await create_client(session, tenant_id=args.tenant, name=args.name)

    issued = _with_session(_settings(), work)
    values = {"client_id": issued.client_id, "client_secret": issued.client_secret}
    print(json.dumps(values) if args.json else "\n".join(f"{k:15} {v}" for k, v in values.items()))
    return 0


def cmd_webhook_secret_rotate(args: argparse.Namespace) -> int:
    from app.services.tenants import rotate_webhook_secret

    settings = _settings()
    hours = settings.webhook_secret_grace_hours if args.grace_hours is None else args.grace_hours

    async def work(pair: Any) -> Any:
        ctx, session = pair
        return await rotate_webhook_secret(
            session, box=ctx.secrets, tenant_id=args.tenant, grace=timedelta(hours=hours)
        )

    secret = _with_session(settings, work)
    if args.json:
        print(json.dumps({"webhook_secret": secret, "previous_valid_hours": hours}))
    else:
        print(f"webhook_secret  {secret}\nThe previous secret stays valid for {hours} h.")
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    import uvicorn

    from app.connectwise.sandbox.app import Sandbox

    sandbox = Sandbox(
        rate_limit_per_minute=args.rate_limit or None,
        drop_mode="sleep",
        settable_clock=args.settable_clock,
        cloud=args.cloud,
    )
    if args.now is not None:
        sandbox.set_now(args.now)
    sandbox.faults.rate = args.fault_rate
    sandbox.faults.latency = args.latency
    print(
        f"ConnectWise sandbox on http://{args.host}:{args.port}  (login company 'sandbox', public key "
        "'sandbox-public', private key 'sandbox-private', any clientId)"
    )
    uvicorn.run(sandbox, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    result = asyncio.run(run_demo(_settings(), sandbox_url=args.sandbox_url))
    return 0 if result.ok else 1


def cmd_worker(args: argparse.Namespace) -> int:
    import signal

    from app.context import AppContext
    from app.sync.worker import Worker

    settings = _settings()

    async def run() -> None:
        ctx = AppContext.build(settings)
        worker = Worker(
            ctx,
            concurrency=args.concurrency,
            full_reconcile_every=timedelta(hours=settings.full_reconcile_hours),
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, worker.stop)  # finish the running batch, then exit
        try:
            await worker.run_forever()
        finally:
            await ctx.aclose()
            await ctx.engine.dispose()

    print("sync worker running (Ctrl-C to stop after the current batch)")
    asyncio.run(run())
    return 0


def export_openapi() -> str:
    from app.main import create_app

    return json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n"


def cmd_openapi(args: argparse.Namespace) -> int:
    document = export_openapi()
    target = Path(args.output)
    if args.check:
        if not target.exists() or target.read_text() != document:
            print(f"{target} is out of date; run: cw-billing-sync openapi", file=sys.stderr)
            return 1
        print(f"{target} is up to date")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(document)
    print(f"wrote {target}")
    return 0


def cmd_keys_generate(_args: argparse.Namespace) -> int:
    from app.security.encryption import generate_key

    print(generate_key())
    return 0


def cmd_keys_rotate(_args: argparse.Namespace) -> int:
    from app.services.keys import reencrypt_all

    async def work(pair: Any) -> Any:
        ctx, session = pair
        return await reencrypt_all(session, box=ctx.secrets)

    count = _with_session(_settings(), work)
    print(f"re-encrypted {count} value(s) under the first ENCRYPTION_KEYS key")
    return 0


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a timezone, e.g. 2026-12-01T00:00:00Z")
    return moment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cw-billing-sync", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="migrate the database, then serve the API (and the in-process worker)")
    p.add_argument("--host", help="address to listen on (default: HOST)")
    p.add_argument("--port", type=int, help="port to listen on (default: PORT)")
    p.add_argument("--no-migrate", action="store_true", help="do not upgrade the schema first")
    p.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="upgrade the database schema to head").set_defaults(func=cmd_migrate)

    tenant_id_help = "the tenant's id (a UUID, as `tenant create` printed it; `tenant list` shows them)"
    tenant = sub.add_parser("tenant", help="manage tenants (MSPs)").add_subparsers(dest="action", required=True)
    p = tenant.add_parser("create", help="create a tenant with a first API client and a webhook secret")
    p.add_argument("--name", required=True, help="the MSP's name (must be new, ignoring case)")
    p.add_argument("--allow-same-name", action="store_true", help="create it even if another tenant has this name")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_tenant_create)
    p = tenant.add_parser("list", help="every tenant: id, name, whether billing is on")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.set_defaults(func=cmd_tenant_list)

    client = sub.add_parser("client", help="manage API clients").add_subparsers(dest="action", required=True)
    p = client.add_parser("create", help="issue another API client for a tenant")
    p.add_argument("--tenant", required=True, help=tenant_id_help)
    p.add_argument("--name", default="default", help="a label for the client (who uses it)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_client_create)
    p = client.add_parser("list", help="a tenant's API clients (never their secrets)")
    p.add_argument("--tenant", required=True, help=tenant_id_help)
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.set_defaults(func=cmd_client_list)
    p = client.add_parser("revoke", help="revoke an API client: its tokens stop working at once")
    p.add_argument("client_id", help="the client's id (cwbs_…)")
    p.set_defaults(func=cmd_client_revoke)

    whs = sub.add_parser("webhook-secret", help="portal webhook signing secrets").add_subparsers(
        dest="action", required=True
    )
    p = whs.add_parser("rotate", help="issue a new secret; the old one stays valid for a grace period")
    p.add_argument("--tenant", required=True, help=tenant_id_help)
    p.add_argument("--grace-hours", type=int, help="hours the previous secret stays valid (default: settings)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_webhook_secret_rotate)

    p = sub.add_parser("worker", help="run a sync worker process (scale-out on PostgreSQL)")
    p.add_argument("--concurrency", type=int, default=8, help="companies reconciled at once (default: 8)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("demo", help="walk the whole story against the sandbox and print the agreements")
    p.add_argument("--sandbox-url", help="a standalone sandbox (cw-billing-sync sandbox); default: in-process")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sandbox", help="run the standalone ConnectWise sandbox")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="port to listen on (default: 8090)")
    p.add_argument("--rate-limit", type=int, default=0, help="requests per minute answered with 429 beyond")
    p.add_argument("--fault-rate", type=float, default=0.0, help="share of API calls that fail at random")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every API call")
    p.add_argument(
        "--settable-clock",
        action="store_true",
        help='let POST /_sandbox/clock {"now": "2026-12-01T00:00:00Z"} move the sandbox\'s calendar (tests, demos)',
    )
    p.add_argument("--now", type=_moment, help="start the sandbox's calendar at this moment (ISO 8601 with a timezone)")
    p.add_argument("--cloud", action="store_true", help="answer like cloud-hosted CW (404 for bad credentials, …)")
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("openapi", help="export the OpenAPI document")
    p.add_argument("--output", default=str(OPENAPI_PATH), help=f"where to write it (default: {OPENAPI_PATH})")
    p.add_argument("--check", action="store_true", help="fail if the file differs from the app")
    p.set_defaults(func=cmd_openapi)

    keys = sub.add_parser("keys", help="encryption keys").add_subparsers(dest="action", required=True)
    keys.add_parser("generate", help="print a new ENCRYPTION_KEYS key").set_defaults(func=cmd_keys_generate)
    keys.add_parser("rotate", help="re-encrypt every stored secret under the first key").set_defaults(
        func=cmd_keys_rotate
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from app.errors import AppError

    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except AppError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    raise SystemExit(main())
