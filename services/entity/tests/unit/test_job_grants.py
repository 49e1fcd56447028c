"""Work under a job grant, decided by the handlers with FakeGrants.

Job J of EMSOU is held by a London researcher and an ERSOU analyst. Under J as the call's purpose
they resolve records into EMSOU (stored as EMSOU's, attached to J), read the entities touched under
J with J's records alone, search only those, and decide, merge and split only what is all J's.
EMSOU's other records and entities stay out of reach, as does everything once J is closed, for
anyone not holding J, and under a purpose that does not name J. EMSOU's own people are decided as
before and never read a grant. ERSOU collaborates on J: its supervisor reads and searches as a
holder does and changes nothing; its other people reach nothing.
"""

from __future__ import annotations

import dataclasses

import pytest
from toex_common.testing.fakes import FakeGrants, principal
from toex_entity.domain import commands, policy
from toex_entity.domain.matching import Thresholds
from toex_entity.domain.model import Outcome, ResolveResult, ReviewState
from toex_entity.domain.records import Address, Grading, Handling, PersonData, PhoneData, RecordType
from toex_entity.entrypoints.grpc_api import entity_to_proto
from toex_entity.service_layer import handlers
from toex_kernel.errors import OutOfScope, PermissionDenied
from toex_kernel.grants import JobGrant
from toex_kernel.idempotency import Idempotency
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from .fakes import FakeRepository, FakeUnitOfWork

JOB = "regions/EMSOU/jobs/job1"
OTHER_JOB = "regions/EMSOU/jobs/job2"
GRADING = Grading(2, "B", Handling.P)
OWNER = principal("researcher.emsou", Role.RESEARCHER)
OWNER_ANALYST = principal("analyst.emsou", Role.ANALYST)
HOLDER = principal("researcher.london", Role.RESEARCHER)
HOLDER_ANALYST = principal("analyst.ersou", Role.ANALYST)
NOT_HOLDING = principal("researcher.ersou", Role.RESEARCHER)
COLLABORATOR = principal("supervisor.ersou", Role.SUPERVISOR)
OUTSIDER = principal("supervisor.nw", Role.SUPERVISOR)

ALICE = PersonData(
    given_name="Alice",
    surname="Wexford",
    birth_date="1991-07-14",
    gender="F",
    addresses=(Address(("3 Canal Street",), "Derby", "DE1 3AA"),),
)
BORIS = PersonData(
    given_name="Boris",
    surname="Tamworth",
    birth_date="1975-02-18",
    gender="M",
    addresses=(Address(("8 Hill Rise",), "Leicester", "LE2 8ZZ"),),
)
DEREK = PersonData(
    given_name="Derek",
    surname="Oyelaran",
    birth_date="1948-05-27",
    gender="M",
    addresses=(Address(("2 Mill Court",), "Nottingham", "NG7 1XY"),),
)
CARYS = PersonData(
    given_name="Carys",
    surname="Penhallow",
    birth_date="1962-11-03",
    gender="F",
    addresses=(Address(("41 Quay Road",), "Lincoln", "LN5 7QQ"),),
)


class CountingGrants(FakeGrants):
    """FakeGrants that counts its reads: owners must not pay for grants."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def of_job(self, job: str) -> JobGrant | None:
        self.reads += 1
        return await super().of_job(job)


@pytest.fixture
def uow() -> FakeUnitOfWork:
    uow = FakeUnitOfWork(FakeRepository())
    uow.grants = CountingGrants()
    uow.grants.grant(JOB, HOLDER.username, HOLDER_ANALYST.username)
    uow.grants.grant(OTHER_JOB, HOLDER.username)
    return uow


@pytest.fixture
def deps(uow: FakeUnitOfWork) -> handlers.Deps:
    return handlers.Deps(uow=lambda: uow)  # type: ignore[arg-type,return-value]


def person(source_id: str, base: PersonData = ALICE, **changes: object) -> commands.IncomingRecord:
    return commands.IncomingRecord(
        Region.EMSOU,
        "niche",
        source_id,
        RecordType.PERSON,
        GRADING,
        dataclasses.replace(base, **changes),  # type: ignore[arg-type]
    )


def phone(source_id: str, number: str) -> commands.IncomingRecord:
    return commands.IncomingRecord(
        Region.EMSOU, "comms", source_id, RecordType.PHONE, GRADING, PhoneData(number)
    )


async def resolve(
    deps: handlers.Deps, actor: Principal, *items: commands.IncomingRecord, purpose: str = ""
) -> list[ResolveResult]:
    return await handlers.resolve_records(
        commands.ResolveRecords(actor, list(items), single=len(items) == 1, purpose=purpose), deps
    )


async def view(
    deps: handlers.Deps, actor: Principal, entity_id: str, purpose: str = JOB
) -> handlers.EntityView:
    return await handlers.get_entity(commands.GetEntity(actor, entity_id, purpose), deps)


async def test_the_holder_resolves_under_the_job_and_reads_the_result(deps, uow) -> None:  # type: ignore[no-untyped-def]
    [made] = await resolve(deps, HOLDER, person("L1"), purpose=JOB)
    stored = uow.repo.records[made.record_id]
    assert (stored.region, stored.job, stored.ingested_by) == (Region.EMSOU, JOB, HOLDER.username)
    seen = await view(deps, HOLDER, made.entity_id)
    assert [r.id for r in seen.records] == [made.record_id] and not seen.other_regions
    # A stream under the job (resolve-csv) attaches its records too; the CLI's short form names J.
    results = await resolve(
        deps, HOLDER, person("L2", BORIS), phone("L3", "07700 900123"), purpose="EMSOU/job1"
    )
    assert [uow.repo.records[r.record_id].job for r in results] == [JOB, JOB]


async def test_the_holder_sees_only_the_jobs_records_of_an_entity_it_touches(deps, uow) -> None:  # type: ignore[no-untyped-def]
    [owned] = await resolve(
        deps, OWNER, person("E1", phone_numbers=("07700 900555",), identifiers=(("PNC", "91/1234X"),))
    )
    # The holder's record is the same person: it joins EMSOU's entity.
    [made] = await resolve(deps, HOLDER, person("L1", given_name="Alyce"), purpose=JOB)
    assert made.entity_id == owned.entity_id and made.outcome is Outcome.LINKED_PROBABILISTIC
    # The explanation's candidate is EMSOU's record outside J: named and valued for no one but EMSOU.
    assert made.hidden == (f"regions/EMSOU/records/{owned.record_id}",)
    seen = await view(deps, HOLDER, owned.entity_id)
    assert [r.id for r in seen.records] == [made.record_id]
    # What is derived from records comes from J's record alone: EMSOU's phone and PNC stay hidden.
    shown = seen.records[0].identifiers
    assert not shown.e164_numbers and not shown.official_ids
    assert set(seen.links) == {made.record_id}
    # Deconfliction: EMSOU holds records on it that the holder may not see, and whom to ask.
    assert seen.other_regions == [Region.EMSOU]
    # EMSOU's own researcher sees both, as before.
    full = await view(deps, OWNER, owned.entity_id, purpose="Op Kestrel")
    assert {r.id for r in full.records} == {owned.record_id, made.record_id} and not full.other_regions
    # A request repeated (same request id) is answered as the first time, EMSOU's record unnamed.
    same_pnc = person("L5", identifiers=(("PNC", "91/1234X"),))
    answers = [
        await handlers.resolve_records(
            commands.ResolveRecords(HOLDER, [same_pnc], idempotency=Idempotency("r-1", "f-1"), purpose=JOB),
            deps,
        )
        for _ in range(2)
    ]
    assert [a.outcome for [a] in answers] == [Outcome.LINKED_DETERMINISTIC] * 2
    assert [a.hidden for [a] in answers] == [made.hidden] * 2


async def test_the_regions_material_outside_the_job_answers_not_found(deps, uow) -> None:  # type: ignore[no-untyped-def]
    [owned] = await resolve(deps, OWNER, person("E1"))
    [elsewhere] = await resolve(deps, OWNER, person("E2", BORIS), purpose=OTHER_JOB)
    [made] = await resolve(deps, HOLDER, person("L1", BORIS, given_name="Borys"), purpose=JOB)
    with pytest.raises(OutOfScope):
        await view(deps, HOLDER, owned.entity_id)
    # ExplainMatch of J's record against EMSOU's other record of the same entity: not found.
    with pytest.raises(OutOfScope):
        await handlers.explain_match(
            commands.ExplainMatch(
                HOLDER, (Region.EMSOU, made.record_id), (Region.EMSOU, elsewhere.record_id), JOB
            ),
            deps,
        )
    # Re-sending EMSOU's record (same source id) neither reveals nor changes it.
    with pytest.raises(PermissionDenied) as refused:
        await resolve(deps, HOLDER, person("E1", given_name="Changed"), purpose=JOB)
    assert "ALICE" not in refused.value.message.upper()
    assert uow.repo.records[owned.record_id].content == ALICE
    [streamed, fine] = await resolve(
        deps, HOLDER, person("E1", given_name="Changed"), person("L9"), purpose=JOB
    )
    assert streamed.error and not streamed.record_id and not fine.error
    assert uow.repo.records[owned.record_id].content == ALICE


async def test_a_closed_grant_a_non_holder_and_another_purpose_are_refused(deps, uow) -> None:  # type: ignore[no-untyped-def]
    [made] = await resolve(deps, HOLDER, person("L1"), purpose=JOB)
    await view(deps, HOLDER, made.entity_id)
    # Someone not holding J, with J as the purpose.
    with pytest.raises(OutOfScope):
        await view(deps, NOT_HOLDING, made.entity_id)
    with pytest.raises(PermissionDenied):
        await resolve(deps, NOT_HOLDING, person("R1"), purpose=JOB)
    # The holder under a purpose that does not name J: an operation name, or another job they hold.
    for purpose in ("Op Kestrel", OTHER_JOB, "regions/ERSOU/jobs/job1"):
        with pytest.raises(OutOfScope):
            await view(deps, HOLDER, made.entity_id, purpose)
    with pytest.raises(PermissionDenied):
        await resolve(deps, HOLDER, person("L2"), purpose="Op Kestrel")
    # J closed: the same calls answer as for anyone of another region.
    uow.grants.grant(JOB, HOLDER.username, open=False)
    with pytest.raises(OutOfScope):
        await view(deps, HOLDER, made.entity_id)
    with pytest.raises(PermissionDenied):
        await resolve(deps, HOLDER, person("L3"), purpose=JOB)


async def test_a_job_subject_is_readable_without_the_regions_records(deps, uow) -> None:  # type: ignore[no-untyped-def]
    [subject] = await resolve(deps, OWNER, person("E1"))
    [bystander] = await resolve(deps, OWNER, person("E2", BORIS))
    with pytest.raises(OutOfScope):
        await view(deps, HOLDER, subject.entity_id)
    async with deps.uow() as work:
        await handlers.record_job_subjects(JOB, Region.EMSOU, [subject.entity_id], work, deps)
        await work.commit()
    seen = await view(deps, HOLDER, subject.entity_id)
    assert seen.records == [] and seen.other_regions == [Region.EMSOU]
    with pytest.raises(OutOfScope):
        await view(deps, HOLDER, bystander.entity_id)
    # The subject of J is not a subject of another job the holder holds.
    with pytest.raises(OutOfScope):
        await view(deps, HOLDER, subject.entity_id, OTHER_JOB)
    # Merged into another entity, the subject is that entity now.
    await handlers.merge(
        commands.MergeEntities(OWNER_ANALYST, bystander.entity_id, [subject.entity_id], "same"), deps
    )
    moved = await view(deps, HOLDER, subject.entity_id)
    assert moved.entity.id == bystander.entity_id and moved.records == []


async def test_a_search_under_the_job_finds_only_what_the_job_touched(deps, uow) -> None:  # type: ignore[no-untyped-def]
    await resolve(deps, OWNER, person("E1", phone_numbers=("07700 900777",)))
    await resolve(deps, OWNER, phone("E2", "07700 900777"))
    [made] = await resolve(deps, HOLDER, person("L1", BORIS, identifiers=(("PNC", "77/1X"),)), purpose=JOB)
    # EMSOU's record of the same man (same PNC), under another name and with a phone: it joins
    # the entity J touched, and stays EMSOU's, matched by no search of the holder's.
    [joined] = await resolve(
        deps, OWNER, person("E3", DEREK, identifiers=(("PNC", "77/1X"),), phone_numbers=("07700 900888",))
    )
    assert joined.entity_id == made.entity_id

    async def search(actor: Principal, purpose: str = JOB, **query: str) -> list[str]:
        views, _ = await handlers.search_entities(
            commands.SearchEntities(actor, purpose=purpose, **query), deps
        )
        return [v.entity.id for v, _ in views]

    assert await search(HOLDER, name="Alice Wexford") == []
    assert await search(HOLDER, phone_number="07700 900777") == []
    assert await search(HOLDER, name="Boris Tamworth") == [made.entity_id]
    assert await search(HOLDER, name="Derek Oyelaran") == []
    assert await search(HOLDER, phone_number="07700 900888") == []
    assert await search(OWNER, name="Derek Oyelaran", purpose="Op Kestrel") == [made.entity_id]
    assert await search(HOLDER, name="Boris Tamworth", purpose="Op Kestrel") == []
    assert len(await search(OWNER, phone_number="07700 900777", purpose="Op Kestrel")) == 2


async def test_merge_and_split_only_what_is_all_the_jobs(deps, uow) -> None:  # type: ignore[no-untyped-def]
    [a] = await resolve(deps, HOLDER, person("L1"), purpose=JOB)
    [b] = await resolve(deps, HOLDER, person("L2", BORIS), purpose=JOB)
    [c] = await resolve(deps, HOLDER, person("L3", CARYS), purpose=JOB)
    # EMSOU's own record of Carys joins the entity of J's: that entity is mixed.
    [owned] = await resolve(deps, OWNER, person("E1", CARYS, given_name="Caris"))
    [untouched] = await resolve(deps, OWNER, person("E2", DEREK))
    assert len({a.entity_id, b.entity_id, c.entity_id, untouched.entity_id}) == 4
    assert owned.entity_id == c.entity_id
    merged, change_id = await handlers.merge(
        commands.MergeEntities(HOLDER_ANALYST, a.entity_id, [b.entity_id], "same", purpose=JOB), deps
    )
    assert {r.id for r in merged.records} == {a.record_id, b.record_id}
    # Read under the grant, its history says what happened and when, not who, why or which ids.
    told = entity_to_proto(merged, policy.contact_role)
    [merge_entry] = [c for c in told.history if c.change_id == change_id]
    assert not (told.merged_ids or merge_entry.reason or merge_entry.decided_by or merge_entry.entities)
    assert entity_to_proto(await view(deps, OWNER, a.entity_id, "Op Kestrel"), policy.contact_role).merged_ids
    # Undoing it moves J's records only.
    kept, restored, _ = await handlers.split(
        commands.SplitEntity(HOLDER_ANALYST, a.entity_id, [], change_id, "wrong", purpose=JOB), deps
    )
    assert [r.id for r in kept.records] == [a.record_id] and [v.entity.id for v in restored] == [b.entity_id]
    # An entity with a record outside J is readable but not the holder's to change, named first
    # or merged in; one J never touched is not found.
    for target, other in ((b.entity_id, c.entity_id), (c.entity_id, b.entity_id)):
        with pytest.raises(PermissionDenied):
            await handlers.merge(
                commands.MergeEntities(HOLDER_ANALYST, target, [other], "same", purpose=JOB), deps
            )
    with pytest.raises(OutOfScope):
        await handlers.merge(
            commands.MergeEntities(HOLDER_ANALYST, b.entity_id, [untouched.entity_id], "same", purpose=JOB),
            deps,
        )
    with pytest.raises(PermissionDenied):
        await handlers.split(
            commands.SplitEntity(
                HOLDER_ANALYST, c.entity_id, [(Region.EMSOU, c.record_id)], "", "not her", purpose=JOB
            ),
            deps,
        )
    assert uow.repo.records[c.record_id].entity_id == uow.repo.records[owned.record_id].entity_id
    assert uow.repo.records[b.record_id].entity_id == b.entity_id
    # J closed: not even J's own.
    uow.grants.grant(JOB, HOLDER_ANALYST.username, open=False)
    with pytest.raises(OutOfScope):
        await handlers.merge(
            commands.MergeEntities(HOLDER_ANALYST, b.entity_id, [a.entity_id], "same", purpose=JOB), deps
        )


async def test_reviews_of_the_jobs_records_only(deps, uow) -> None:  # type: ignore[no-untyped-def]
    async with deps.uow() as work:
        model = await deps.models.current(work)
    await handlers.save_model(
        dataclasses.replace(model, thresholds=Thresholds(auto_link=1.01, review=0.5)), deps
    )
    [owned] = await resolve(deps, OWNER, person("E1", identifiers=(("PNC", "11"),)))
    [mine] = await resolve(
        deps, HOLDER, person("L1", given_name="Alys", identifiers=(("PND", "22"),)), purpose=JOB
    )
    [theirs] = await resolve(
        deps, HOLDER, person("L2", given_name="Ali", identifiers=(("PND", "33"),)), purpose=JOB
    )
    assert mine.outcome is Outcome.QUEUED_FOR_REVIEW and theirs.outcome is Outcome.QUEUED_FOR_REVIEW
    tasks = {t.record_id: t for t in uow.repo.reviews.values() if t.candidate_record_id != owned.record_id}
    jobs_task = tasks[theirs.record_id]  # between J's two records
    mixed = [t for t in uow.repo.reviews.values() if t.candidate_record_id == owned.record_id]
    assert jobs_task.candidate_record_id == mine.record_id and mixed

    listed, _ = await handlers.list_review_tasks(
        commands.ListReviewTasks(HOLDER, Region.EMSOU, ReviewState.OPEN, 50, None, JOB), deps
    )
    assert [t.id for t, _, _ in listed] == [jobs_task.id]
    with pytest.raises(PermissionDenied):
        await handlers.list_review_tasks(
            commands.ListReviewTasks(NOT_HOLDING, Region.EMSOU, ReviewState.OPEN, 50, None, JOB), deps
        )
    # A pair with EMSOU's record outside J: not found to the holder.
    with pytest.raises(OutOfScope):
        await handlers.decide_review(
            commands.DecideReview(HOLDER, Region.EMSOU, mixed[0].id, False, "different", purpose=JOB), deps
        )
    decided, *_ = await handlers.decide_review(
        commands.DecideReview(HOLDER, Region.EMSOU, jobs_task.id, True, "same woman", purpose=JOB), deps
    )
    assert decided.decided_by == HOLDER.username
    assert uow.repo.records[mine.record_id].entity_id == uow.repo.records[theirs.record_id].entity_id

    # Two more of J's records in review; then EMSOU's own record joins one's entity (same PND):
    # confirming would merge EMSOU's record too, which is not the holder's to move. Rejecting
    # decides the two records of J only.
    [first] = await resolve(deps, HOLDER, person("L3", CARYS, identifiers=(("PND", "44"),)), purpose=JOB)
    [second] = await resolve(
        deps, HOLDER, person("L4", CARYS, given_name="Karys", identifiers=(("PND", "55"),)), purpose=JOB
    )
    [task] = [t for t in uow.repo.reviews.values() if t.record_id == second.record_id]
    assert task.candidate_record_id == first.record_id
    [joined] = await resolve(deps, OWNER, person("E2", DEREK, identifiers=(("PND", "44"),)))
    assert joined.entity_id == first.entity_id
    with pytest.raises(PermissionDenied):
        await handlers.decide_review(
            commands.DecideReview(HOLDER, Region.EMSOU, task.id, True, "same woman", purpose=JOB), deps
        )
    assert uow.repo.records[second.record_id].entity_id != uow.repo.records[first.record_id].entity_id
    rejected, *_ = await handlers.decide_review(
        commands.DecideReview(HOLDER, Region.EMSOU, task.id, False, "different women", purpose=JOB), deps
    )
    assert rejected.state is ReviewState.REJECTED


async def test_owners_are_decided_as_before_and_never_read_a_grant(deps, uow) -> None:  # type: ignore[no-untyped-def]
    for purpose, first, second in (("Op Kestrel", ALICE, BORIS), (JOB, CARYS, DEREK)):
        [a] = await resolve(deps, OWNER, person(f"E1{purpose}", first), purpose=purpose)
        results = await resolve(
            deps,
            OWNER,
            person(f"E2{purpose}", second),
            phone(f"E3{purpose}", "07700 900321"),
            purpose=purpose,
        )
        seen = await view(deps, OWNER, a.entity_id, purpose)
        assert [r.id for r in seen.records] == [a.record_id]
        await handlers.search_entities(
            commands.SearchEntities(OWNER, name=first.full_name, purpose=purpose), deps
        )
        await handlers.explain_match(
            commands.ExplainMatch(
                OWNER, (Region.EMSOU, a.record_id), (Region.EMSOU, results[0].record_id), purpose
            ),
            deps,
        )
        await handlers.list_review_tasks(
            commands.ListReviewTasks(OWNER, Region.EMSOU, ReviewState.OPEN, 50, None, purpose), deps
        )
        await handlers.merge(
            commands.MergeEntities(
                OWNER_ANALYST, a.entity_id, [results[0].entity_id], "same", purpose=purpose
            ),
            deps,
        )
    assert uow.grants.reads == 0
    # What EMSOU resolves under its own job is attached to it, and nothing else is.
    assert sorted(r.job for r in uow.repo.records.values()) == ["", "", "", JOB, JOB, JOB]


async def test_a_collaborating_regions_supervisor_reads_as_a_holder_and_changes_nothing(deps, uow) -> None:  # type: ignore[no-untyped-def]
    uow.grants.grant(JOB, HOLDER.username, HOLDER_ANALYST.username, collaborators=frozenset({Region.ERSOU}))
    [owned] = await resolve(deps, OWNER, person("E1", phone_numbers=("07700 900555",)))
    [made] = await resolve(deps, HOLDER, person("L1", given_name="Alyce"), purpose=JOB)
    [boris] = await resolve(deps, HOLDER, person("L2", BORIS), purpose=JOB)
    [untouched] = await resolve(deps, OWNER, person("E2", DEREK))
    [subject] = await resolve(deps, OWNER, person("E3", CARYS))
    assert made.entity_id == owned.entity_id
    async with deps.uow() as work:
        await handlers.record_job_subjects(JOB, Region.EMSOU, [subject.entity_id], work, deps)
        await work.commit()

    # Reads the entities touched under J, with J's records only, as the holder does.
    seen = await view(deps, COLLABORATOR, owned.entity_id)
    assert [r.id for r in seen.records] == [made.record_id] and seen.other_regions == [Region.EMSOU]
    assert not seen.records[0].identifiers.e164_numbers and seen.partial
    assert [r.job for r in entity_to_proto(seen, policy.contact_role).records] == [JOB]
    named = await view(deps, COLLABORATOR, subject.entity_id)
    assert named.records == [] and named.other_regions == [Region.EMSOU]
    with pytest.raises(OutOfScope):
        await view(deps, COLLABORATOR, untouched.entity_id)

    # Searches and compares as the holder does: J's records only.
    async def search(actor: Principal, purpose: str = JOB, **query: str) -> list[str]:
        views, _ = await handlers.search_entities(
            commands.SearchEntities(actor, purpose=purpose, **query), deps
        )
        return [v.entity.id for v, _ in views]

    assert await search(COLLABORATOR, name="Boris Tamworth") == [boris.entity_id]
    assert await search(COLLABORATOR, name="Derek Oyelaran") == []
    assert await search(COLLABORATOR, phone_number="07700 900555") == []
    explained = await handlers.explain_match(
        commands.ExplainMatch(
            COLLABORATOR, (Region.EMSOU, made.record_id), (Region.EMSOU, boris.record_id), JOB
        ),
        deps,
    )
    assert explained.record_a.endswith(made.record_id)
    with pytest.raises(OutOfScope):
        await handlers.explain_match(
            commands.ExplainMatch(
                COLLABORATOR, (Region.EMSOU, made.record_id), (Region.EMSOU, owned.record_id), JOB
            ),
            deps,
        )

    # Changes nothing: no resolving, no review, no merge or split, even of what is all J's.
    with pytest.raises(PermissionDenied):
        await resolve(deps, COLLABORATOR, person("C1", BORIS), purpose=JOB)
    with pytest.raises(PermissionDenied):
        await handlers.list_review_tasks(
            commands.ListReviewTasks(COLLABORATOR, Region.EMSOU, ReviewState.OPEN, 50, None, JOB), deps
        )
    with pytest.raises(PermissionDenied) as refused:
        await handlers.merge(
            commands.MergeEntities(COLLABORATOR, boris.entity_id, [made.entity_id], "same", purpose=JOB), deps
        )
    assert "collaborates" in refused.value.message
    with pytest.raises(PermissionDenied):
        await handlers.split(
            commands.SplitEntity(
                COLLABORATOR, made.entity_id, [(Region.EMSOU, made.record_id)], "", "not her", purpose=JOB
            ),
            deps,
        )
    with pytest.raises(OutOfScope):
        await handlers.merge(
            commands.MergeEntities(COLLABORATOR, untouched.entity_id, [boris.entity_id], "x", purpose=JOB),
            deps,
        )
    assert uow.repo.records[boris.record_id].entity_id == boris.entity_id
    assert uow.repo.records[made.record_id].entity_id == owned.entity_id
    assert len([r for r in uow.repo.records.values() if r.ingested_by == COLLABORATOR.username]) == 0


async def test_a_collaborators_review_decision_is_not_found(deps, uow) -> None:  # type: ignore[no-untyped-def]
    uow.grants.grant(JOB, HOLDER.username, collaborators=frozenset({Region.ERSOU}))
    async with deps.uow() as work:
        model = await deps.models.current(work)
    await handlers.save_model(
        dataclasses.replace(model, thresholds=Thresholds(auto_link=1.01, review=0.5)), deps
    )
    [first] = await resolve(deps, HOLDER, person("L1", identifiers=(("PND", "22"),)), purpose=JOB)
    [second] = await resolve(
        deps, HOLDER, person("L2", given_name="Ali", identifiers=(("PND", "33"),)), purpose=JOB
    )
    assert second.outcome is Outcome.QUEUED_FOR_REVIEW
    [task] = [t for t in uow.repo.reviews.values() if t.record_id == second.record_id]
    assert task.candidate_record_id == first.record_id
    for confirm in (True, False):
        with pytest.raises(OutOfScope):
            await handlers.decide_review(
                commands.DecideReview(COLLABORATOR, Region.EMSOU, task.id, confirm, "same", purpose=JOB),
                deps,
            )
    assert uow.repo.reviews[task.id].state is ReviewState.OPEN


async def test_only_a_collaborating_regions_supervisor_under_the_open_job_reads(deps, uow) -> None:  # type: ignore[no-untyped-def]
    uow.grants.grant(JOB, HOLDER.username, collaborators=frozenset({Region.ERSOU}))
    uow.grants.grant(OTHER_JOB, HOLDER.username)
    [made] = await resolve(deps, HOLDER, person("L1"), purpose=JOB)
    [elsewhere] = await resolve(deps, HOLDER, person("L2", BORIS), purpose=OTHER_JOB)
    await view(deps, COLLABORATOR, made.entity_id)
    # ERSOU's researcher and analyst (not holding J), and a supervisor of a region not named.
    for actor in (NOT_HOLDING, principal("analyst2.ersou", Role.ANALYST, Region.ERSOU), OUTSIDER):
        with pytest.raises(OutOfScope):
            await view(deps, actor, made.entity_id)
    # The collaborator under a purpose other than J, or a job ERSOU does not collaborate on.
    for purpose in ("Op Kestrel", OTHER_JOB):
        with pytest.raises(OutOfScope):
            await view(deps, COLLABORATOR, made.entity_id, purpose)
    with pytest.raises(OutOfScope):
        await view(deps, COLLABORATOR, elsewhere.entity_id, OTHER_JOB)
    # J closed: nothing.
    uow.grants.grant(JOB, HOLDER.username, open=False, collaborators=frozenset({Region.ERSOU}))
    with pytest.raises(OutOfScope):
        await view(deps, COLLABORATOR, made.entity_id)
