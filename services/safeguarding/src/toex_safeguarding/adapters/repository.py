"""The referral repository on PostgreSQL (SQLAlchemy Core; the aggregate is plain dataclasses)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import astuple
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    String,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from toex_kernel.regions import Region

from toex_safeguarding.adapters.tables import open_referral_keys, referral_clocks, referrals
from toex_safeguarding.domain.model import (
    Clock,
    Consent,
    Decision,
    DutyToNotify,
    Evidence,
    Progress,
    Referral,
    Subject,
)
from toex_safeguarding.domain.values import (
    DEADLINE_CLOCKS,
    AgeBand,
    ClockKind,
    Concern,
    ConsentStatus,
    DecisionKind,
    Destination,
    Escalation,
    EvidenceKind,
    Handling,
    Outcome,
    RiskLevel,
    State,
)
from toex_safeguarding.service_layer.ports import OpenReferralExists, OverdueRow, ReferralQuery

_DEADLINES = [k.value for k in DEADLINE_CLOCKS]


def _t(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _subject_json(subject: Subject) -> dict[str, Any]:
    return {
        "date_of_birth": subject.date_of_birth.isoformat() if subject.date_of_birth else None,
        "age_band": subject.age_band.value,
        "local_authority": subject.local_authority,
        "consent": {
            "status": subject.consent.status.value,
            "recorded_by": subject.consent.recorded_by,
            "recorded_at": _t(subject.consent.recorded_at),
        },
    }


def _subject(entity_id: str, data: dict[str, Any]) -> Subject:
    consent = data.get("consent") or {}
    return Subject(
        entity_id=entity_id,
        date_of_birth=date.fromisoformat(data["date_of_birth"]) if data.get("date_of_birth") else None,
        age_band=AgeBand(data.get("age_band", "UNKNOWN")),
        local_authority=data.get("local_authority", ""),
        consent=Consent(
            ConsentStatus(consent.get("status", "NOT_RECORDED")),
            consent.get("recorded_by", ""),
            _dt(consent.get("recorded_at")),
        ),
    )


def _evidence_json(items: list[Evidence]) -> list[dict[str, Any]]:
    return [
        {
            "kind": e.kind.value,
            "ref": e.ref,
            "description": e.description,
            "by": e.added_by,
            "at": _t(e.added_at),
        }
        for e in items
    ]


def _evidence(data: list[dict[str, Any]]) -> list[Evidence]:
    return [
        Evidence(EvidenceKind(e["kind"]), e["ref"], e["description"], e["by"], _dt(e["at"])) for e in data
    ]


def _progress_json(items: list[Progress]) -> list[dict[str, Any]]:
    return [
        {
            "destination": p.destination.value,
            "submitted_at": _t(p.submitted_at),
            "agency_reference": p.agency_reference,
            "acknowledged_at": _t(p.acknowledged_at),
            "decisions": [
                {
                    "kind": d.kind.value,
                    "outcome": d.outcome.value,
                    "detail": d.detail,
                    "decided_at": _t(d.decided_at),
                    "recorded_by": d.recorded_by,
                    "recorded_at": _t(d.recorded_at),
                }
                for d in p.decisions
            ],
        }
        for p in items
    ]


def _progress(data: list[dict[str, Any]]) -> list[Progress]:
    return [
        Progress(
            Destination(p["destination"]),
            _dt(p["submitted_at"]),
            p["agency_reference"],
            _dt(p["acknowledged_at"]),
            [
                Decision(
                    DecisionKind(d["kind"]),
                    Outcome(d["outcome"]),
                    d["detail"],
                    _dt(d["decided_at"]),  # type: ignore[arg-type]
                    d["recorded_by"],
                    _dt(d["recorded_at"]),  # type: ignore[arg-type]
                )
                for d in p["decisions"]
            ],
        )
        for p in data
    ]


def _notice_json(notice: DutyToNotify | None) -> dict[str, Any] | None:
    if notice is None:
        return None
    return {
        "reference": notice.reference,
        "concerns": [c.value for c in notice.concerns],
        "first_responder": notice.first_responder.value,
        "created_at": _t(notice.created_at),
        "age_band": notice.age_band.value,
    }


def _notice(data: dict[str, Any] | None) -> DutyToNotify | None:
    if not data:
        return None
    return DutyToNotify(
        reference=data["reference"],
        concerns=tuple(Concern(c) for c in data["concerns"]),
        first_responder=Region(data["first_responder"]),
        created_at=_dt(data["created_at"]),  # type: ignore[arg-type]
        age_band=AgeBand(data["age_band"]),
    )


def _row(r: Referral) -> dict[str, Any]:
    return {
        "id": r.id,
        "region": r.region.value,
        "state": r.state.value,
        "subject_entity_id": r.subject.entity_id,
        "subject": _subject_json(r.subject),
        "concerns": [c.value for c in r.concerns],
        "risk_level": r.risk_level.value,
        "evidence": _evidence_json(r.evidence),
        "destinations": [d.value for d in r.destinations],
        "destinations_chosen": r.destinations_chosen,
        "progress": _progress_json(r.progress),
        "linked_job": r.linked_job,
        "handling": r.handling.value,
        "submitted_for_approval_by": r.submitted_for_approval_by,
        "approved_by": r.approved_by,
        "approved_at": r.approved_at,
        "return_reason": r.return_reason,
        "close_reason": r.close_reason,
        "duty_to_notify": _notice_json(r.duty_to_notify),
        "created_by": r.created_by,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    }


def _clock(row: Any) -> Clock:
    return Clock(
        ClockKind(row.kind),
        Destination(row.destination),
        row.started_at,
        row.due_at,
        row.not_before,
        row.satisfied_at,
        Escalation(row.escalation),
        row.escalated_at,
    )


def _referral(row: Any, clocks: list[Clock]) -> Referral:
    return Referral(
        id=row.id,
        region=Region(row.region),
        subject=_subject(row.subject_entity_id, row.subject),
        concerns=[Concern(c) for c in row.concerns],
        risk_level=RiskLevel(row.risk_level),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        state=State(row.state),
        evidence=_evidence(row.evidence),
        destinations=[Destination(d) for d in row.destinations],
        destinations_chosen=row.destinations_chosen,
        progress=_progress(row.progress),
        clocks=clocks,
        linked_job=row.linked_job,
        handling=Handling(row.handling),
        submitted_for_approval_by=row.submitted_for_approval_by,
        approved_by=row.approved_by,
        approved_at=row.approved_at,
        return_reason=row.return_reason,
        close_reason=row.close_reason,
        duty_to_notify=_notice(row.duty_to_notify),
    )


def _overdue_condition(now: datetime) -> Any:
    c = referral_clocks.c
    return and_(c.satisfied_at.is_(None), c.kind.in_(_DEADLINES), c.due_at <= now)


def _clock_state(referral: Referral) -> tuple[Any, ...]:
    return tuple(astuple(c) for c in referral.clocks)


def _key_state(referral: Referral) -> tuple[Any, ...]:
    return (referral.is_open, referral.subject.entity_id, tuple(referral.concerns))


# The statements every trigger runs, built once (their parameters bound by name): building a
# statement and its cache key afresh on each call cost the consumer about as much CPU as sending it.
_k = open_referral_keys.c
_HELD_KEYS = select(_k.subject_entity_id, _k.concern).where(_k.referral_id == bindparam("referral_id"))
# One statement whatever the number of concerns (an array, not a row of parameters each).
_CLAIM_KEYS = text(
    "INSERT INTO open_referral_keys (region, subject_entity_id, concern, referral_id) "
    "SELECT :region, :subject, concern, :referral_id FROM unnest(CAST(:concerns AS text[])) AS wanted(concern) "
    "ON CONFLICT DO NOTHING RETURNING concern"
)
_INSERT_REFERRAL = insert(referrals)
_UPDATE_REFERRAL = update(referrals).where(referrals.c.id == bindparam("referral_id"))
_CLOCKS = (
    select(referral_clocks)
    .where(referral_clocks.c.referral_id == any_(bindparam("ids", type_=ARRAY(String))))
    .order_by(referral_clocks.c.referral_id, referral_clocks.c.position)
)


def _open_holding(with_concern: bool) -> Any:
    """The open referral holding a (region, subject) key, of one concern or any, locked."""
    holder = select(_k.referral_id).where(
        _k.region == bindparam("region"), _k.subject_entity_id == bindparam("subject")
    )
    if with_concern:
        holder = holder.where(_k.concern == bindparam("concern"))
    return (
        select(referrals)
        .where(referrals.c.id.in_(holder.scalar_subquery()), referrals.c.state != State.CLOSED.value)
        .order_by(referrals.c.created_at, referrals.c.id)
        .limit(1)
        .with_for_update()
    )


_OPEN_OF_CONCERN = _open_holding(with_concern=True)
_OPEN_OF_ANY_CONCERN = _open_holding(with_concern=False)


class SqlReferralRepository:
    def __init__(self, session: AsyncSession, track: Callable[[Referral], None] = lambda _: None) -> None:
        self.session = session
        # The unit of work's: a stored referral's domain events are published at its commit.
        self._track = track
        # What each referral's clocks and keys were when loaded in this unit of work, so that a
        # save which did not change them (evidence added by a repeated trigger) skips rewriting them.
        self._loaded: dict[str, tuple[tuple[Any, ...], tuple[Any, ...]]] = {}

    async def _claim_keys(self, referral: Referral, *, new: bool = False) -> None:
        """Hold the (subject, concern) keys the referral has now, and only those: a subject that
        changed (an identity change) moves its keys. A `new` referral holds none yet."""
        subject = referral.subject.entity_id
        wanted = {(subject, c.value) for c in referral.concerns} if referral.is_open else set()
        k = open_referral_keys.c
        held = (
            set()
            if new
            else {
                (row.subject_entity_id, row.concern)
                for row in await self.session.execute(_HELD_KEYS, {"referral_id": referral.id})
            }
        )
        if stale := held - wanted:
            await self.session.execute(
                delete(open_referral_keys).where(
                    k.referral_id == referral.id, tuple_(k.subject_entity_id, k.concern).in_(sorted(stale))
                )
            )
        missing = sorted(concern for s, concern in wanted - held)
        if not missing:
            return
        claimed = {
            row.concern
            for row in await self.session.execute(
                _CLAIM_KEYS,
                {
                    "region": referral.region.value,
                    "subject": subject,
                    "referral_id": referral.id,
                    "concerns": missing,
                },
            )
        }
        taken = [c for c in missing if c not in claimed]
        if taken:
            if claimed:  # undo our part of the claim; the caller decides what happens next
                await self.session.execute(
                    delete(open_referral_keys).where(
                        k.referral_id == referral.id, k.subject_entity_id == subject, k.concern.in_(claimed)
                    )
                )
            holder = (
                await self.session.execute(
                    select(k.referral_id).where(
                        k.region == referral.region.value,
                        k.subject_entity_id == referral.subject.entity_id,
                        k.concern == taken[0],
                    )
                )
            ).scalar_one_or_none()
            raise OpenReferralExists(holder or "", Concern(taken[0]))

    async def _write_clocks(self, referral: Referral) -> None:
        await self.session.execute(
            delete(referral_clocks).where(referral_clocks.c.referral_id == referral.id)
        )
        if referral.clocks:
            await self.session.execute(
                insert(referral_clocks),
                [
                    {
                        "referral_id": referral.id,
                        "position": i,
                        "region": referral.region.value,
                        "kind": c.kind.value,
                        "destination": c.destination.value,
                        "started_at": c.started_at,
                        "due_at": c.due_at,
                        "not_before": c.not_before,
                        "satisfied_at": c.satisfied_at,
                        "escalation": int(c.escalation),
                        "escalated_at": c.escalated_at,
                        "next_escalation_at": c.next_escalation_at(referral.region),
                    }
                    for i, c in enumerate(referral.clocks)
                ],
            )

    async def add(self, referral: Referral) -> None:
        await self._claim_keys(referral, new=True)
        await self.session.execute(_INSERT_REFERRAL, _row(referral))
        if referral.clocks:
            await self._write_clocks(referral)
        self._loaded[referral.id] = (_clock_state(referral), _key_state(referral))
        self._track(referral)

    async def save(self, referral: Referral) -> None:
        clocks, keys = self._loaded.get(referral.id, (None, None))
        if keys != _key_state(referral):
            await self._claim_keys(referral)
        row = _row(referral)
        row["referral_id"] = row.pop("id")
        await self.session.execute(_UPDATE_REFERRAL, row)
        if clocks != _clock_state(referral):
            await self._write_clocks(referral)
        self._loaded[referral.id] = (_clock_state(referral), _key_state(referral))
        self._track(referral)

    async def _clocks(self, ids: list[str]) -> dict[str, list[Clock]]:
        found: dict[str, list[Clock]] = defaultdict(list)
        if not ids:
            return found
        rows = await self.session.execute(_CLOCKS, {"ids": ids})
        for row in rows:
            found[row.referral_id].append(_clock(row))
        return found

    async def _load(self, statement: Any, parameters: dict[str, Any] | None = None) -> list[Referral]:
        rows = (await self.session.execute(statement, parameters)).all()
        clocks = await self._clocks([r.id for r in rows])
        found = [_referral(r, clocks.get(r.id, [])) for r in rows]
        for referral in found:
            self._loaded[referral.id] = (_clock_state(referral), _key_state(referral))
        return found

    async def get(self, referral_id: str, *, for_update: bool = False) -> Referral | None:
        statement = select(referrals).where(referrals.c.id == referral_id)
        if for_update:
            statement = statement.with_for_update()
        found = await self._load(statement)
        return found[0] if found else None

    async def find_open(
        self, region: Region, subject_entity_id: str, concern: Concern | None
    ) -> Referral | None:
        parameters = {"region": region.value, "subject": subject_entity_id}
        if concern is None:
            found = await self._load(_OPEN_OF_ANY_CONCERN, parameters)
        else:
            found = await self._load(_OPEN_OF_CONCERN, {**parameters, "concern": concern.value})
        return found[0] if found else None

    async def open_about(self, region: Region, subjects: Collection[str]) -> list[Referral]:
        if not subjects:
            return []
        k = open_referral_keys.c
        holders = select(k.referral_id).where(
            k.region == region.value, k.subject_entity_id.in_(sorted(subjects))
        )
        return await self._load(
            select(referrals)
            .where(referrals.c.id.in_(holders.scalar_subquery()), referrals.c.state != State.CLOSED.value)
            .order_by(referrals.c.created_at, referrals.c.id)
            .with_for_update()
        )

    async def search(
        self, query: ReferralQuery, limit: int, after: tuple[datetime, str] | None
    ) -> list[Referral]:
        conditions: list[Any] = []
        if query.regions is not None:
            conditions.append(referrals.c.region.in_([r.value for r in query.regions]))
        if query.states:
            conditions.append(referrals.c.state.in_([s.value for s in query.states]))
        if query.linked_job:
            # The first condition lets the partial index referrals_job_created serve a bound job.
            conditions.append(referrals.c.linked_job != "")
            conditions.append(referrals.c.linked_job == query.linked_job)
        if query.overdue_at is not None:
            conditions.append(
                exists().where(
                    referral_clocks.c.referral_id == referrals.c.id, _overdue_condition(query.overdue_at)
                )
            )
        if after is not None:
            conditions.append(tuple_(referrals.c.created_at, referrals.c.id) < tuple_(*after))
        return await self._load(
            select(referrals)
            .where(and_(*conditions))
            .order_by(referrals.c.created_at.desc(), referrals.c.id.desc())
            .limit(limit)
        )

    async def overdue(
        self, regions: frozenset[Region] | None, now: datetime, limit: int, after: tuple[datetime, str] | None
    ) -> tuple[list[OverdueRow], int]:
        c = referral_clocks.c
        condition = [_overdue_condition(now)]
        if regions is not None:
            condition.append(c.region.in_([r.value for r in regions]))
        total = (
            await self.session.execute(select(func.count()).select_from(referral_clocks).where(*condition))
        ).scalar_one()
        page_condition = list(condition)
        if after is not None:
            referral_id, _, position = after[1].partition(":")
            page_condition.append(
                tuple_(c.due_at, c.referral_id, c.position)
                > tuple_(after[0], referral_id, int(position or 0))
            )
        keys = (
            await self.session.execute(
                select(c.referral_id, c.position)
                .where(*page_condition)
                .order_by(c.due_at, c.referral_id, c.position)
                .limit(limit)
            )
        ).all()
        loaded = {
            r.id: r
            for r in await self._load(
                select(referrals).where(referrals.c.id.in_({k.referral_id for k in keys}))
            )
        }
        rows = [
            OverdueRow(loaded[k.referral_id], loaded[k.referral_id].clocks[k.position])
            for k in keys
            if k.referral_id in loaded
        ]
        return rows, int(total)

    async def to_escalate(self, now: datetime, limit: int) -> list[Referral]:
        due = (
            select(referral_clocks.c.referral_id)
            .where(referral_clocks.c.next_escalation_at <= now)
            .scalar_subquery()
        )
        return await self._load(
            select(referrals)
            .where(referrals.c.id.in_(due))
            .order_by(referrals.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
