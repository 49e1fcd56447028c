"""A consumer killed between handling an event and acknowledging it: the event is delivered
again, to the next process, and its effect still happens once.

One cell per consuming service (`CASES`): the event another service publishes, the durable
consumer that takes it, and the effect it has. The first process commits the effect, then dies
before its acknowledgement: the test stops the consumer's task at that point (as a SIGKILL
would, nothing after the commit runs) and shuts the process down. JetStream delivers the event
again once the acknowledgement wait runs out, to a second process of the same service on the
same database and durable consumer, whose inbox knows the event: acknowledged as done, not
handled again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import pytest
from toex.entity.events.v1 import events_pb2 as entity_events
from toex.entity.v1 import entity_pb2
from toex.pnd.events.v1 import events_pb2 as pnd_events
from toex.pnd.v1 import pole_pb2
from toex.safeguarding.events.v1 import events_pb2 as safeguarding_events
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex.type.v1 import security_pb2
from toex_common.events import EventEnvelope, build_event
from toex_common.events.consumer import Outcome
from toex_kernel.regions import Region

from .matrix import (
    COMMS,
    ENTITY,
    PND,
    SAFEGUARDING,
    TASKING,
    ServiceSpec,
    about,
    consumer_bound,
    consumer_info,
    event_ids,
    eventually,
    job_request,
    number,
    published,
    query,
    relayed,
    watchlist_contact,
)

# How long JetStream waits for an acknowledgement before delivering again (30 s in production).
ACK_WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class ConsumerCase:
    spec: ServiceSpec
    consumer: str  # the durable consumer's name, or how it ends (`<service_name>-job-notes`)
    stream: str  # the producer's stream it reads
    # What must exist before the event means anything (a job to note on); returns a key the
    # event and the checks are about.
    given: Callable[[Any], Awaitable[str]]
    event: Callable[[str], EventEnvelope]
    # Each effect the event has, by what it is, and how many times it happened (1 each).
    effects: Callable[[Any, str, EventEnvelope], Awaitable[dict[str, int]]]
    # The resources whose events the service publishes for the effect, and their types in order.
    publishes: Callable[[Any, str], Awaitable[list[str]]] | None = None
    published_types: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.spec.name


async def fresh_key(service: Any) -> str:
    return uuid.uuid4().hex[:12]


# -- safeguarding: comms WatchlistContactDetected drafts a referral (`-comms-triggers`) ---------


async def referral_evidence(service: Any, victim: str, event: EventEnvelope) -> dict[str, int]:
    """Per referral of the subject, how often the event is in its evidence."""
    rows = await query(
        service.dsn,
        "SELECT id, (SELECT count(*) FROM jsonb_array_elements(evidence) e WHERE e->>'ref' = $2) AS n "
        "FROM referrals WHERE subject_entity_id = $1",
        victim,
        event.event_id,
    )
    return {
        "referral drafted for the subject": len(rows),
        "the event in its evidence": sum(r["n"] for r in rows),
    }


async def referrals_of(service: Any, victim: str) -> list[str]:
    rows = await query(service.dsn, "SELECT id FROM referrals WHERE subject_entity_id = $1", victim)
    return [f"regions/EMSOU/referrals/{r['id']}" for r in rows]


# -- tasking: safeguarding JobNoteRequested writes a note on the job (`-job-notes`) --------------


async def a_job(service: Any) -> str:
    answer = await service.stub.CreateJob(
        job_request(1, str(uuid.uuid4())), metadata=service.md(), timeout=15
    )
    return str(answer.job.name)


def note_requested(job: str) -> EventEnvelope:
    message = safeguarding_events.JobNoteRequested(
        referral=f"regions/EMSOU/referrals/{uuid.uuid4().hex[:16]}",
        job=job,
        note_id=uuid.uuid4().hex,
        text="Safeguarding referral drafted for a subject of this job.",
    )
    return build_event(message, domain="safeguarding", source="toex/safeguarding", region=Region.EMSOU)


async def job_notes(service: Any, job: str, event: EventEnvelope) -> dict[str, int]:
    note_id = safeguarding_events.JobNoteRequested.FromString(event.payload).note_id
    notes = await query(service.dsn, "SELECT 1 FROM job_notes WHERE id = $1", note_id)
    audited = await query(
        service.dsn, "SELECT 1 FROM audit_log WHERE $1 = ANY(resources)", f"{job}/notes/{note_id}"
    )
    return {"note on the job": len(notes), "audit entry of the note": len(audited)}


# -- entity: PND PndResultReceived resolves its records (`entity-pnd-results`) ------------------


def pnd_result(key: str) -> EventEnvelope:
    message = pnd_events.PndResultReceived(
        results=[
            pole_pb2.PndSourceRecord(
                source_record_id=f"pnd/{key}@1",
                pnd_id=key,
                pnd_version=1,
                entity=pole_pb2.PoleEntity(phone=pole_pb2.Phone(e164=number(7))),
                grading=pole_pb2.Grading(
                    source_evaluation=pole_pb2.SOURCE_EVALUATION_1,
                    intelligence_assessment=pole_pb2.INTELLIGENCE_ASSESSMENT_B,
                    handling=security_pb2.HANDLING_CODE_P,
                ),
            )
        ]
    )
    return build_event(
        message, domain="pnd", source="toex/pnd", region=Region.EMSOU, handling=security_pb2.HANDLING_CODE_P
    )


async def pnd_records(service: Any, key: str) -> list[str]:
    rows = await query(
        service.dsn,
        "SELECT id FROM source_records WHERE source_system = 'pnd' AND source_record_id = $1",
        f"pnd/{key}@1",
    )
    return [f"regions/EMSOU/records/{r['id']}" for r in rows]


async def pnd_record_stored(service: Any, key: str, event: EventEnvelope) -> dict[str, int]:
    return {"source record of the PND result": len(await pnd_records(service, key))}


# -- comms: entity RecordLinked attributes the number to the entity (`comms-entities`) ----------


def record_linked(entity_id: str) -> EventEnvelope:
    message = entity_events.RecordLinked(
        entity=f"entities/{entity_id}",
        entity_id=entity_id,
        entity_type=entity_pb2.RECORD_TYPE_PHONE,
        record=f"regions/EMSOU/records/{uuid.uuid4().hex}",
        identifiers=entity_pb2.StrongIdentifiers(e164_numbers=[number(8)]),
        decided_by="faults",
    )
    return build_event(message, domain="entity", source="toex/entity", region=Region.EMSOU)


async def attributions(service: Any, entity_id: str, event: EventEnvelope) -> dict[str, int]:
    rows = await query(
        service.dsn,
        "SELECT recorded_at FROM attributions WHERE region = 'EMSOU' AND identifier = $1 AND entity_id = $2",
        number(8),
        entity_id,
    )
    return {"number attributed to the entity": len(rows)}


# -- pnd: tasking JobAssigned grants the job to its holder (`pnd-job-grants`) -------------------

GRANT_HOLDER, GRANT_REVISION = "researcher.london", 2


def job_assigned(key: str) -> EventEnvelope:
    message = tasking_events.JobAssigned(
        job=f"regions/EMSOU/jobs/{key}",
        access=tasking_events.JobAccess(
            revision=GRANT_REVISION,
            state=tasking_events.JOB_STATE_ASSIGNED,
            assignees=[tasking_events.Assignee(username=GRANT_HOLDER)],
        ),
    )
    return build_event(message, domain="tasking", source="toex/tasking", region=Region.EMSOU)


async def job_grant(service: Any, key: str, event: EventEnvelope) -> dict[str, int]:
    rows = await query(
        service.dsn,
        "SELECT open, holders, revision FROM job_grants WHERE job = $1",
        f"regions/EMSOU/jobs/{key}",
    )
    held = [
        r for r in rows if r["open"] and r["holders"] == [GRANT_HOLDER] and r["revision"] == GRANT_REVISION
    ]
    return {"grant of the job": len(rows), "open, held by its assignee, at the event's revision": len(held)}


CASES = [
    ConsumerCase(
        SAFEGUARDING,
        "-comms-triggers",
        "COMMS",
        given=fresh_key,
        event=watchlist_contact,
        effects=referral_evidence,
        publishes=referrals_of,
        published_types=["ReferralDrafted"],
        settings={"consume_triggers": True},
    ),
    ConsumerCase(TASKING, "-job-notes", "SAFEGUARDING", given=a_job, event=note_requested, effects=job_notes),
    ConsumerCase(
        ENTITY,
        "entity-pnd-results",
        "PND",
        given=fresh_key,
        event=pnd_result,
        effects=pnd_record_stored,
        publishes=pnd_records,
        published_types=["RecordLinked"],
        settings={"consume": True},
    ),
    ConsumerCase(
        COMMS,
        "-entities",
        "ENTITY",
        given=fresh_key,
        event=record_linked,
        effects=attributions,
        settings={"consume_events": True},
    ),
    ConsumerCase(PND, "-job-grants", "TASKING", given=fresh_key, event=job_assigned, effects=job_grant),
]


def consumer_of(app: Any, case: ConsumerCase) -> Any:
    return next(c for c in app.consumers if c.name.endswith(case.consumer))


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_an_event_handled_but_not_acknowledged_takes_effect_once(
    case: ConsumerCase, broker: Any, launch: Any, postgres: Any
) -> None:
    committed = asyncio.Event()

    def slow_acks(app: Any) -> None:
        for consumer in app.consumers:
            consumer._ack_wait = ACK_WAIT_SECONDS

    def dies_after_commit(app: Any) -> None:
        slow_acks(app)
        consumer = consumer_of(app, case)
        process = consumer._process  # claim in the inbox, handle, commit: the ack comes after

        async def process_then_hang(event: Any) -> Outcome:
            outcome = await process(event)
            committed.set()
            await asyncio.Event().wait()  # never returns: the test kills the task here
            return outcome

        consumer._process = process_then_hang

    first = await launch(
        case.spec, postgres=postgres, nats_url=broker.url, prepare=dies_after_commit, **case.settings
    )
    name = consumer_of(first.app, case).name
    key = await case.given(first)

    await consumer_bound(broker.url, case.stream, name)
    event = case.event(key)
    nc = await nats.connect(broker.url)
    try:
        await nc.jetstream().publish(event.subject, event.payload, headers=event.headers)
    finally:
        await nc.close()
    await asyncio.wait_for(committed.wait(), 20)

    # The process dies: its consumer never acknowledges, then the rest shuts down.
    task = next(t for t in first.app.tasks if t.get_name() == name)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await first.stop()
    effects = await case.effects(first, key, event)
    assert set(effects.values()) == {1}, f"the first process committed each effect before it died: {effects}"

    second = await launch(
        case.spec,
        postgres=postgres,
        nats_url=broker.url,
        database=first.database,
        prepare=slow_acks,
        **case.settings,
    )
    consumer = consumer_of(second.app, case)

    async def delivered_again() -> bool:
        return consumer.counts[Outcome.DUPLICATE] + consumer.counts[Outcome.PROCESSED] >= 1

    await eventually(delivered_again, "the unacknowledged event to be delivered again")

    # The inbox knew the event: the repeat was acknowledged as done, not handled again.
    assert consumer.counts[Outcome.DUPLICATE] == 1 and consumer.counts[Outcome.PROCESSED] == 0, (
        consumer.counts
    )
    effects = await case.effects(second, key, event)
    assert set(effects.values()) == {1}, f"each effect once: {effects}"

    # The effect's events published once: nothing more for the repeat.
    if case.publishes is not None:
        await relayed(second)
        resources = await case.publishes(second, key)

        def ours(messages: list[Any]) -> list[Any]:
            return [m for m in messages if any(about(m.headers.get("ce-subject", ""), r) for r in resources)]

        messages = ours(
            await published(broker.url, case.spec.domain, until=lambda found: len(ours(found)) >= 1)
        )
        assert [m.headers["ce-type"].rsplit(".", 1)[-1] for m in messages] == case.published_types
        assert set(event_ids(messages).values()) == {1}

    # Acknowledged this time: nothing is left waiting for the consumer, nothing dead-lettered.
    info = await consumer_info(broker.url, case.stream, consumer.name)
    assert info.num_ack_pending == 0 and info.num_pending == 0
    assert consumer.counts[Outcome.DEAD_LETTERED] == 0 and consumer.counts[Outcome.RETRY] == 0
