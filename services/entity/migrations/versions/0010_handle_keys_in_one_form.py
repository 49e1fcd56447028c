"""Online-account keys in the one normal form of toex_kernel.accounts.

Handles were keyed `handle:<platform>:<handle>` with the platform as written and the handle
lower-cased; they are now keyed as comms keys them (aliases folded: "twitter" is `x`, "insta"
is `instagram`; Facebook's dots dropped). Stored keys and the records' identifiers are
re-keyed here, in this migration's transaction, so a record ingested after the upgrade meets
the records stored before it. A stored key the new rules refuse is left as it was. An unknown
platform's handle keeps its case from now on; one stored before was lower-cased and stays so.
Fingerprints of the new keys are published by the deconfliction backfill.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

import json

import sqlalchemy as sa
from alembic import op
from toex_kernel import accounts

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def rekeyed(key: str) -> str:
    """`handle:twitter:abc` -> `handle:x:abc`; a key the rules refuse is kept as it was."""
    platform, _, handle = key.removeprefix("handle:").partition(":")
    try:
        return "handle:" + accounts.OnlineAccount.of(platform, handle).key
    except accounts.AccountError:
        return key


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT key, record_id FROM record_keys WHERE key LIKE 'handle:%'")).all()
    moved = [(key, record, rekeyed(key)) for key, record in rows]
    moved = [m for m in moved if m[2] != m[0]]
    for key, record, new in moved:
        bind.execute(
            sa.text("DELETE FROM record_keys WHERE key = :key AND record_id = :record"),
            {"key": key, "record": record},
        )
        bind.execute(
            sa.text("INSERT INTO record_keys (key, record_id) VALUES (:key, :record) ON CONFLICT DO NOTHING"),
            {"key": new, "record": record},
        )
    records = bind.execute(
        sa.text(
            "SELECT id, identifiers FROM source_records "
            "WHERE jsonb_array_length(coalesce(identifiers->'handles', '[]'::jsonb)) > 0"
        )
    ).all()
    for record_id, identifiers in records:
        handles = list(identifiers.get("handles", []))
        new_handles = list(dict.fromkeys(rekeyed(f"handle:{h}").removeprefix("handle:") for h in handles))
        if new_handles != handles:
            bind.execute(
                sa.text(
                    "UPDATE source_records SET identifiers = jsonb_set(identifiers, '{handles}', CAST(:h AS jsonb)) WHERE id = :id"
                ),
                {"h": json.dumps(new_handles), "id": record_id},
            )


def downgrade() -> None:
    # The old form lost nothing the new one keeps, but the new form cannot say which alias a
    # record was written with: the keys stay in the new form.
    pass
