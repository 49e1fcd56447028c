"""Running a service's Alembic migrations programmatically, and the shared env.py logic."""

from __future__ import annotations

import asyncio
import re
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import Connection, make_url
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


_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# What the runtime role may do: read and write the service's own rows, and only append to and
# read the audit log. It owns nothing, so it can neither disable the audit log's triggers nor
# alter, drop or truncate a table. Run after every migration, as the owner, for new tables.
_RUNTIME_GRANTS = (
    'GRANT USAGE ON SCHEMA public TO "{role}"',
    'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"',
    'REVOKE ALL ON audit_log FROM "{role}"',
    'GRANT SELECT, INSERT ON audit_log TO "{role}"',
    'REVOKE ALL ON alembic_version FROM "{role}"',
    'GRANT SELECT ON alembic_version TO "{role}"',
    'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"',
)


def grant_runtime_role(owner_url: str, role: str) -> None:
    """Give `role` (the service's runtime role) the least the service needs on the tables that
    `owner_url`'s role owns; idempotent."""
    if not _ROLE.match(role):
        raise ValueError(f"runtime database role {role!r}: use lower-case letters, digits and _")

    async def run() -> None:
        engine = create_async_engine(owner_url, poolclass=pool.NullPool)
        try:
            async with engine.begin() as connection:
                for statement in _RUNTIME_GRANTS:
                    await connection.execute(text(statement.format(role=role)))
        finally:
            await engine.dispose()

    asyncio.run(run())


def migrate(database_url: str, migration_database_url: str, script_location: Path) -> str:
    """A service's `migrate` command: upgrade as the owning role, then grant the runtime role
    (`database_url`'s user) its privileges when the two differ. Returns what was done."""
    owner_url = migration_database_url or database_url
    upgrade(owner_url, script_location)
    runtime, owner = make_url(database_url).username, make_url(owner_url).username
    if runtime and runtime != owner:
        grant_runtime_role(owner_url, runtime)
        return f"migrated as {owner}; runtime role {runtime} may read and write rows, and only append to the audit log"
    return f"migrated as {owner} (no separate runtime role: set TOEX_MIGRATION_DATABASE_URL to keep one)"


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
