"""Notes on tasking jobs travel as JobNoteRequested events through the platform outbox, no longer
as AddJobNote calls from job_note_outbox: drop job_note_outbox.

Every note in it that was not delivered (pending, or refused for good by the old relay) is moved
into the outbox, in this migration's transaction, as the JobNoteRequested event the service now
publishes: under its referral's region and handling code, at the time the note was queued, with
the note's id as note_id. None is lost: the relay publishes them and tasking adds each once; one
it refuses (another region's job, a job that does not exist) goes to the dead-letter stream with
the reason. Delivered notes are on their jobs already and are dropped with the table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from toex.safeguarding.events.v1 import events_pb2
from toex.type.v1 import security_pb2
from toex_common.db import outbox_table
from toex_common.events import build_event
from toex_kernel.regions import Region

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)

# Each undelivered note with its referral's region and handling code (a referral's name is
# `regions/{region}/referrals/{id}`; the region in the name is the referral's).
UNDELIVERED = sa.text(
    """
    SELECT n.id, n.job, n.referral, n.text, n.created_at, r.handling
    FROM job_note_outbox n LEFT JOIN referrals r ON r.id = split_part(n.referral, '/', 4)
    WHERE n.sent_at IS NULL
    ORDER BY n.created_at, n.id
    """
)


def upgrade() -> None:
    rows = op.get_bind().execute(UNDELIVERED).all()
    events = []
    for row in rows:
        message = events_pb2.JobNoteRequested(
            referral=row.referral, job=row.job, note_id=row.id.replace("-", ""), text=row.text
        )
        event = build_event(
            message,
            domain="safeguarding",
            source="toex/safeguarding",
            region=Region.parse(row.referral.split("/")[1]),
            # A note whose referral is gone keeps the stricter code.
            handling=security_pb2.HANDLING_CODE_P if row.handling == "P" else security_pb2.HANDLING_CODE_C,
            resource=row.referral,
            occurred_at=row.created_at,
        )
        events.append(
            {
                "event_id": event.event_id,
                "subject": event.subject,
                "event_type": event.event_type,
                "payload": event.payload,
                "headers": event.headers,
            }
        )
    if events:
        op.get_bind().execute(outbox_table.insert(), events)
    op.drop_table("job_note_outbox")


def downgrade() -> None:
    # The table comes back empty: notes moved into the outbox may have been published already.
    op.create_table(
        "job_note_outbox",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("job", sa.Text, nullable=False),
        sa.Column("referral", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TZ, nullable=False),
        sa.Column("sent_at", TZ),
        sa.Column("failed_at", TZ),
        sa.Column("last_error", sa.Text),
    )
    op.create_index(
        "job_note_outbox_pending",
        "job_note_outbox",
        ["next_attempt_at"],
        postgresql_where=sa.text("sent_at IS NULL AND failed_at IS NULL"),
    )
