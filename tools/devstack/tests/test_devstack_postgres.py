"""The postgres and database fixtures: a real PostgreSQL cluster on loopback."""

import uuid

import asyncpg
import pytest
from toex_devstack import Postgres

pytestmark = pytest.mark.integration


async def test_created_database_answers_queries_and_keeps_its_data_across_a_restart(
    postgres: Postgres,
) -> None:
    name = f"devstack_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(name)
    assert url == f"postgresql+asyncpg://toex:toex@127.0.0.1:{postgres.port}/{name}"
    assert postgres.create_database(name) == url, "creating an existing database reuses it"

    conn = await asyncpg.connect(postgres.dsn(name))
    try:
        await conn.execute("CREATE TABLE job (id int PRIMARY KEY, title text NOT NULL)")
        await conn.execute("INSERT INTO job VALUES (1, 'vehicles linked to suspects')")
    finally:
        await conn.close()

    postgres.restart()

    conn = await asyncpg.connect(postgres.dsn(name))
    try:
        assert await conn.fetchval("SELECT title FROM job WHERE id = 1") == "vehicles linked to suspects"
        assert await conn.fetchval("SHOW max_connections") == "200"
    finally:
        await conn.close()

    postgres.drop_database(name)
    assert not postgres.database_exists(name)
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncpg.connect(postgres.dsn(name))


async def test_database_fixture_gives_each_test_an_empty_database_of_its_own(database: str) -> None:
    assert database.startswith("postgresql+asyncpg://toex:toex@127.0.0.1:")
    conn = await asyncpg.connect(database.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        assert (await conn.fetchval("SELECT current_database()")).startswith("t_")
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert tables == 0
    finally:
        await conn.close()


async def test_connections_need_the_password(postgres: Postgres) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(
            host="127.0.0.1", port=postgres.port, user="toex", password="wrong", database="postgres"
        )


def test_database_names_that_could_inject_sql_are_refused(postgres: Postgres) -> None:
    with pytest.raises(ValueError):
        postgres.create_database('x"; DROP DATABASE postgres; --')


async def test_a_service_database_is_owned_by_one_role_and_served_by_another(postgres: Postgres) -> None:
    name = f"devstack_{uuid.uuid4().hex[:12]}"
    # A local stack made before services had roles of their own: everything is the superuser's.
    postgres.create_database(name)
    conn = await asyncpg.connect(postgres.dsn(name))
    try:
        await conn.execute("CREATE TABLE job (id int PRIMARY KEY)")
    finally:
        await conn.close()

    db = postgres.service_database(name, owner=f"{name}_owner", runtime=f"{name}_app")
    assert db.migration_url == postgres.url(name, user=f"{name}_owner")
    assert db.runtime_url == postgres.url(name, user=f"{name}_app")
    conn = await asyncpg.connect(db.migration_url.replace("+asyncpg", ""))
    try:
        assert (
            await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'job'") == f"{name}_owner"
        )
        assert (
            await conn.fetchval(
                "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = $1",
                f"{name}_app",
            )
            is False
        )
    finally:
        await conn.close()
    assert postgres.service_database(name, owner=f"{name}_owner", runtime=f"{name}_app") == db, "repeatable"
    postgres.drop_database(name)
