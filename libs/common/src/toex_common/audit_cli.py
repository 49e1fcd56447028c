"""`toex-audit`: operator commands for a service's audit log."""

from __future__ import annotations

import asyncio
import json
import sys

import click
from sqlalchemy import select

from toex_common.audit import verify
from toex_common.audit_anchor import anchor_subject, last_anchor
from toex_common.db import audit_table, create_engine
from toex_common.events.nats import connect


@click.group(help="Inspect and verify a service's tamper-evident audit log (DPA 2018 s62).")
def main() -> None:
    pass


@main.command(
    "verify",
    help="Recompute the hash chain; exit 1 if any entry was edited, deleted or inserted. With "
    "--nats-url, also check the table against the last head the service anchored in JetStream, "
    "which finds a deleted tail, an emptied table or a chain rewritten from the start (exit 2 if "
    "there are entries but no anchor to check them against).",
)
@click.option(
    "--database-url", envvar="TOEX_DATABASE_URL", required=True, help="the service's database (asyncpg URL)"
)
@click.option(
    "--nats-url", default=None, help="NATS holding the AUDIT stream (the hub's); without it, the chain alone"
)
@click.option(
    "--service", "service_name", envvar="TOEX_SERVICE_NAME", default=None, help="the service's name"
)
@click.option(
    "--region", envvar="TOEX_REGION", default="NATIONAL", show_default=True, help="its installation's region"
)
def verify_command(database_url: str, nats_url: str | None, service_name: str | None, region: str) -> None:
    async def run() -> int:
        anchor = None
        if nats_url:
            if not service_name:
                raise click.UsageError(
                    "--nats-url needs --service (the name the service publishes its anchor as)"
                )
            nc = await connect(nats_url, "toex-audit")
            try:
                anchor = await last_anchor(nc.jetstream(), anchor_subject(region, service_name))
            finally:
                await nc.close()
        engine = create_engine(database_url, pool_size=1, max_overflow=0)
        try:
            report = await verify(engine, anchor=anchor)
        finally:
            await engine.dispose()
        if report.intact and nats_url and anchor is None and report.entries:
            # A service anchors within a minute of its first entry: entries without any anchor
            # mean it has only just started, or the anchors were removed. Either way the tail
            # cannot be vouched for.
            click.echo(
                f"audit chain links ({report.entries} entries) but no anchor was found for "
                f"{service_name} in {region}: a deleted tail cannot be ruled out. If the service "
                f"started within the last minute (TOEX_AUDIT_ANCHOR_SECONDS), run verify again; "
                f"otherwise check that the AUDIT stream is sourced from this installation",
                err=True,
            )
            return 2
        if report.intact:
            against = f", up to the anchor of entry {anchor.seq} ({anchor.at})" if anchor else ""
            click.echo(f"audit log intact: {report.entries} entries verified{against}")
            return 0
        click.echo(
            f"audit log BROKEN: {len(report.problems)} problem(s) in {report.entries} entries", err=True
        )
        for problem in report.problems:
            click.echo(f"  {problem}", err=True)
        return 1

    sys.exit(asyncio.run(run()))


@main.command("tail", help="Print the newest entries as JSON lines.")
@click.option(
    "--database-url", envvar="TOEX_DATABASE_URL", required=True, help="the service's database (asyncpg URL)"
)
@click.option("--limit", default=20, show_default=True, help="how many entries")
def tail_command(database_url: str, limit: int) -> None:
    async def run() -> None:
        engine = create_engine(database_url, pool_size=1, max_overflow=0)
        try:
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(select(audit_table).order_by(audit_table.c.seq.desc()).limit(limit))
                ).mappings()
                for row in reversed(list(rows)):
                    click.echo(json.dumps({k: v for k, v in row.items()}, default=str))
        finally:
            await engine.dispose()

    asyncio.run(run())


if __name__ == "__main__":
    main()
