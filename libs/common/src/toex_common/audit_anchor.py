"""The audit chain's head, anchored outside the database.

Each service publishes the head of its audit chain (newest sequence number and hash) to
JetStream, on `toex.<region>.audit.anchor.<service>` in stream AUDIT, which the national hub
sources. Whoever can write the service's database could delete the newest entries, or empty the
table, and re-chain what is left so that it verifies; the anchor, held by another system, is
what `toex-audit verify --nats-url` checks the table against.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncEngine

from toex_common.audit import Anchor, head
from toex_common.events.streams import StreamSpec

log = logging.getLogger(__name__)

AUDIT_STREAM = StreamSpec.for_domain("AUDIT", "audit")


def anchor_subject(region: str, service: str) -> str:
    return f"toex.{region.lower()}.audit.anchor.{service}"


async def publish_anchor(engine: AsyncEngine, js: JetStreamContext, subject: str) -> Anchor | None:
    """Publish the chain's head (once per head: the message id is the sequence number)."""
    anchor = await head(engine)
    if anchor is None:
        return None
    await js.publish(subject, anchor.to_json(), headers={"Nats-Msg-Id": f"{subject}:{anchor.seq}"})
    return anchor


async def last_anchor(js: JetStreamContext, subject: str) -> Anchor | None:
    """The newest anchor published on `subject`, or None if there is none."""
    try:
        message = await js.get_last_msg(AUDIT_STREAM.name, subject)
    except NotFoundError:
        return None
    return Anchor.from_json(message.data or b"")
