"""`make status` beside each service: what its outbox has still to publish, and how long the
oldest of it has waited (read from the service's database, as the status does)."""

import uuid
from pathlib import Path

import pytest
from toex_devstack import Postgres
from toex_devstack.stack import Ports, Stack

pytestmark = pytest.mark.integration


def test_status_shows_the_outbox_backlog_and_the_oldest_events_age(
    postgres: Postgres, tmp_path: Path
) -> None:
    name = f"devstack_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    try:
        # The outbox columns the status reads (toex_common.db.outbox_table has them and more).
        postgres.psql("CREATE TABLE outbox (created_at timestamptz NOT NULL, published_at timestamptz)", name)
        stack = Stack(tmp_path, ports=Ports(postgres=postgres.port))
        state = {"postgres": {"data_dir": str(postgres.data_dir)}}
        assert stack._outbox_backlog(stack.ports, state, name) == "outbox: 0 waiting"

        postgres.psql(
            "INSERT INTO outbox VALUES (now() - interval '90 seconds', NULL), "
            "(now() - interval '10 seconds', NULL), (now() - interval '1 hour', now())",
            name,
        )
        assert stack._outbox_backlog(stack.ports, state, name) == "outbox: 2 waiting, oldest 90s"
    finally:
        postgres.drop_database(name)
