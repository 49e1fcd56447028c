"""Running a service's Alembic migrations programmatically, and the shared env.py logic."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATION_LOCK_KEY = 0x70E7A11B


def service_migrations(package: str, main_file: str) -> Path:
    """A service's migrations: shipped inside the package in an installed wheel, beside src/ in
    the source tree (`main_file` is the service's src/<package>/__main__.py)."""
    packaged = Path(str(resources.files(package))) / "migrations"
    return (
        packaged if (packaged / "env.py").is_file() else Path(main_file).resolve().parents[2] / "migrations"
    )


def alembic_config(database_url: str, script_location: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, script_location: Path, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url, script_location), revision)


def run_env(context: object, target_metadata: MetaData) -> None:
    """The body of every service's migrations/env.py (online, async engine)."""
    from alembic import context as alembic_context

    ctx = alembic_context
    url = ctx.config.get_main_option("sqlalchemy.url")
    if ctx.is_offline_mode():
        ctx.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with ctx.begin_transaction():
            ctx.run_migrations()
        return

    def do_run(connection: Connection) -> None:
        # Several replicas may start at once: one migrates, the others wait and then find nothing to do.
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
        connection.commit()
        ctx.configure(connection=connection, target_metadata=target_metadata)
        with ctx.begin_transaction():
            ctx.run_migrations()

    async def run() -> None:
        engine = create_async_engine(str(url), poolclass=pool.NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
        await engine.dispose()

    asyncio.run(run())
