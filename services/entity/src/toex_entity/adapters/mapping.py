"""Protobuf <-> domain translation."""

from __future__ import annotations

from toex.entity.v1 import entity_pb2 as pb
from toex.type.v1 import security_pb2
from toex_kernel.errors import Violations
from toex_kernel.timestamps import optional_timestamp as ts

from toex_entity.domain.model import Explanation, ReviewState, ReviewTask
from toex_entity.domain.mules import MuleReport
from toex_entity.domain.records import (
    AccountData,
    Address,
    Content,
    EmailData,
    Grading,
    Handling,
    Identifiers,
    PersonData,
    PhoneData,
    RecordType,
    SourceRecord,
    VehicleData,
)
from toex_entity.domain.relations import Neighbourhood, Relation, RelationKind, StoredRelation, reason

_TYPES = {
    RecordType.PERSON: pb.RECORD_TYPE_PERSON,
    RecordType.PHONE: pb.RECORD_TYPE_PHONE,
    RecordType.VEHICLE: pb.RECORD_TYPE_VEHICLE,
    RecordType.ONLINE_ACCOUNT: pb.RECORD_TYPE_ONLINE_ACCOUNT,
    RecordType.EMAIL: pb.RECORD_TYPE_EMAIL,
}
_TYPES_BACK = {v: k for k, v in _TYPES.items()}
_CONTENT_FIELD = {
    "person": RecordType.PERSON,
    "phone": RecordType.PHONE,
    "vehicle": RecordType.VEHICLE,
    "online_account": RecordType.ONLINE_ACCOUNT,
    "email": RecordType.EMAIL,
}
_GENDER = {pb.GENDER_MALE: "M", pb.GENDER_FEMALE: "F", pb.GENDER_OTHER: "X"}
_GENDER_BACK = {v: k for k, v in _GENDER.items()}
_ASSESSMENT = "ABCDE"
_REVIEW = {
    ReviewState.OPEN: pb.REVIEW_STATE_OPEN,
    ReviewState.CONFIRMED: pb.REVIEW_STATE_CONFIRMED,
    ReviewState.REJECTED: pb.REVIEW_STATE_REJECTED,
    ReviewState.SUPERSEDED: pb.REVIEW_STATE_SUPERSEDED,
}
_DECISIONS = {
    "DETERMINISTIC": pb.MATCH_DECISION_DETERMINISTIC,
    "AUTO_LINK": pb.MATCH_DECISION_AUTO_LINK,
    "REVIEW": pb.MATCH_DECISION_REVIEW,
    "KEEP_APART": pb.MATCH_DECISION_KEEP_APART,
    "REVIEWER_REJECTED": pb.MATCH_DECISION_REVIEWER_REJECTED,
    "REVIEWER_CONFIRMED": pb.MATCH_DECISION_REVIEWER_CONFIRMED,
}


def record_type_to_proto(value: RecordType) -> int:
    return _TYPES[value]


def record_type_from_proto(value: int) -> RecordType | None:
    return _TYPES_BACK.get(value)  # type: ignore[call-overload]


def review_state_to_proto(value: ReviewState) -> int:
    return _REVIEW[value]


def review_state_from_proto(value: int) -> ReviewState:
    for state, number in _REVIEW.items():
        if number == value:
            return state
    return ReviewState.OPEN


def identifiers_to_proto(ids: Identifiers) -> pb.StrongIdentifiers:
    return pb.StrongIdentifiers(
        e164_numbers=ids.e164_numbers,
        vrms=ids.vrms,
        emails=ids.emails,
        handles=ids.handles,
        official_ids=ids.official_ids,
    )


def grading_from_proto(grading: pb.Grading, problems: Violations, field: str) -> Grading:
    evaluation = int(grading.source_evaluation)
    assessment = int(grading.intelligence_assessment)
    if not 1 <= evaluation <= 3:
        problems.add(f"{field}.source_evaluation", "grade the source 1, 2 or 3")
    if not 1 <= assessment <= 5:
        problems.add(f"{field}.intelligence_assessment", "assess the intelligence A to E")
    handling = Handling.P if grading.handling == security_pb2.HANDLING_CODE_P else Handling.C
    return Grading(
        evaluation if 1 <= evaluation <= 3 else 0,
        _ASSESSMENT[assessment - 1] if 1 <= assessment <= 5 else "",
        handling,
        grading.handling_conditions.strip(),
    )


def grading_to_proto(grading: Grading) -> pb.Grading:
    return pb.Grading(
        source_evaluation=grading.source_evaluation,  # type: ignore[arg-type]
        intelligence_assessment=_ASSESSMENT.index(grading.assessment) + 1 if grading.assessment else 0,  # type: ignore[arg-type]
        handling=security_pb2.HANDLING_CODE_P
        if grading.handling is Handling.P
        else security_pb2.HANDLING_CODE_C,
        handling_conditions=grading.conditions,
    )


def content_from_proto(record: pb.SourceRecord) -> tuple[RecordType | None, Content | None]:
    which = record.WhichOneof("content")
    if which is None:
        return None, None
    record_type = _CONTENT_FIELD[which]
    if which == "person":
        p = record.person
        return record_type, PersonData(
            given_name=p.given_name.strip(),
            middle_names=p.middle_names.strip(),
            surname=p.surname.strip(),
            aliases=tuple(a.strip() for a in p.aliases if a.strip()),
            birth_date=p.birth_date.strip(),
            gender=_GENDER.get(p.gender, ""),  # type: ignore[call-overload]
            addresses=tuple(
                Address(
                    tuple(line.strip() for line in a.lines if line.strip()),
                    a.town.strip(),
                    a.postcode.strip(),
                )
                for a in p.addresses
            ),
            identifiers=tuple((i.scheme, i.value) for i in p.identifiers),
            phone_numbers=tuple(p.phone_numbers),
            emails=tuple(p.emails),
            vrms=tuple(p.vrms),
            online_accounts=tuple((a.platform, a.handle) for a in p.online_accounts),
        )
    if which == "phone":
        return record_type, PhoneData(record.phone.number.strip() or record.phone.e164.strip())
    if which == "vehicle":
        v = record.vehicle
        return record_type, VehicleData(v.vrm, v.make.strip(), v.model.strip(), v.colour.strip())
    if which == "online_account":
        return record_type, AccountData(record.online_account.platform, record.online_account.handle)
    return record_type, EmailData(record.email.address)


def record_to_proto(record: SourceRecord, *, with_content: bool = True) -> pb.SourceRecord:
    out = pb.SourceRecord(
        name=record.name,
        ref=pb.SourceRecordRef(
            source_system=record.source_system,
            source_record_id=record.source_record_id,
            record_type=record_type_to_proto(record.record_type),  # type: ignore[arg-type]
        ),
        region=record.region.to_proto(),  # type: ignore[arg-type]
        grading=grading_to_proto(record.grading),
        ingest_time=ts(record.ingested_at),
        ingested_by=record.ingested_by,
        entity=f"entities/{record.entity_id}" if record.entity_id else "",
        identifiers=identifiers_to_proto(record.identifiers),
        job=record.job,
    )
    if not with_content:
        return out
    c = record.content
    ids = record.identifiers
    if isinstance(c, PersonData):
        out.person.CopyFrom(
            pb.Person(
                given_name=c.given_name,
                middle_names=c.middle_names,
                surname=c.surname,
                aliases=c.aliases,
                birth_date=c.birth_date,
                gender=_GENDER_BACK.get(c.gender, pb.GENDER_UNSPECIFIED),  # type: ignore[arg-type]
                addresses=[pb.Address(lines=a.lines, town=a.town, postcode=a.postcode) for a in c.addresses],
                identifiers=[pb.OfficialIdentifier(scheme=s, value=v) for s, v in c.identifiers],
                phone_numbers=ids.e164_numbers,
                emails=ids.emails,
                vrms=ids.vrms,
                online_accounts=[
                    pb.OnlineAccount(platform=h.split(":", 1)[0], handle=h.split(":", 1)[1])
                    for h in ids.handles
                ],
            )
        )
    elif isinstance(c, PhoneData):
        out.phone.CopyFrom(pb.Phone(number=c.number, e164=ids.e164_numbers[0] if ids.e164_numbers else ""))
    elif isinstance(c, VehicleData):
        out.vehicle.CopyFrom(
            pb.Vehicle(vrm=ids.vrms[0] if ids.vrms else c.vrm, make=c.make, model=c.model, colour=c.colour)
        )
    elif isinstance(c, AccountData):
        platform, _, handle = (ids.handles[0] if ids.handles else f"{c.platform}:{c.handle}").partition(":")
        out.online_account.CopyFrom(pb.OnlineAccount(platform=platform, handle=handle))
    elif isinstance(c, EmailData):
        out.email.CopyFrom(pb.Email(address=ids.emails[0] if ids.emails else c.address))
    return out


def explanation_to_proto(e: Explanation | None, *, show_values: bool = True) -> pb.MatchExplanation | None:
    if e is None:
        return None
    return pb.MatchExplanation(
        record_a=e.record_a,
        record_b=e.record_b,
        prior_match_weight=e.prior_weight,
        contributions=[
            pb.ComparisonContribution(
                comparison=c["comparison"],
                level=c["level"],
                match_weight=c["weight"],
                bayes_factor=c["bayes_factor"],
                value_a=c["value_a"] if show_values else "",
                value_b=c["value_b"] if show_values else "",
            )
            for c in e.contributions
        ],
        match_weight=e.weight,
        probability=e.probability,
        decision=_DECISIONS.get(e.decision, pb.MATCH_DECISION_UNSPECIFIED),  # type: ignore[arg-type]
        shared_identifiers=e.shared_identifiers,
        text=e.text if show_values else e.value_free_text(),
        model_version=e.model_version,
    )


def review_to_proto(task: ReviewTask, entity: str, candidate_entity: str) -> pb.ReviewTask:
    return pb.ReviewTask(
        name=task.name,
        record=task.explanation.record_a,
        candidate_record=task.explanation.record_b,
        entity=f"entities/{entity}" if entity else "",
        candidate_entity=f"entities/{candidate_entity}" if candidate_entity else "",
        explanation=explanation_to_proto(task.explanation),
        state=review_state_to_proto(task.state),  # type: ignore[arg-type]
        decided_by=task.decided_by,
        reason=task.reason,
        create_time=ts(task.created_at),
        decide_time=ts(task.decided_at),
    )


def mule_report_to_proto(report: MuleReport, size: int) -> pb.AnalyseMulesResponse:
    """At most `size` findings and `size` clusters (the clusters come highest score first)."""
    return pb.AnalyseMulesResponse(
        findings=[
            pb.MuleFinding(kind=f.kind, subject=f.subject, entities=f.entities, reasons=f.reasons)
            for f in report.findings[:size]
        ],
        clusters=[
            pb.MuleCluster(
                persons=c.persons,
                accounts=c.accounts,
                holders=c.holders,
                controller=c.controller,
                score=c.score,
                alert=c.alert,
                reasons=c.reasons,
            )
            for c in report.clusters[:size]
        ],
        findings_total=len(report.findings),
        clusters_total=len(report.clusters),
        oversized_components=len(report.oversized),
    )


def relation_kind_from_proto(value: int) -> RelationKind | None:
    if not value or value not in pb.RelationKind.values():
        return None
    name = pb.RelationKind.Name(pb.RelationKind.ValueType(value)).removeprefix("RELATION_KIND_")
    return RelationKind(name) if name in RelationKind.__members__ else None


def neighbourhood_to_proto(graph: Neighbourhood) -> pb.GetNeighbourhoodResponse:
    def name(node_id: str) -> str:
        return node_id if node_id.startswith(("addr:", "bank:")) else f"entities/{node_id}"

    return pb.GetNeighbourhoodResponse(
        nodes=[
            pb.NeighbourhoodNode(name=name(n.id), node_type=n.node_type, label=n.label, depth=n.depth)
            for n in graph.nodes
        ],
        edges=[
            pb.NeighbourhoodEdge(relation=stored_relation_to_proto(s), reason=reason(s)) for s in graph.edges
        ],
        truncated=graph.truncated,
    )


def stored_relation_to_proto(stored: StoredRelation) -> pb.Relation:
    """A stored relation as GetEntity shows it: with its region and provenance."""
    out = relation_to_proto(stored.relation)
    out.region = f"regions/{stored.relation.region}"
    out.record_time.FromDatetime(stored.recorded_at)
    out.recorded_by = stored.recorded_by
    return out


def relation_to_proto(r: Relation) -> pb.Relation:
    keyed = r.target.startswith(("addr:", "bank:"))
    return pb.Relation(
        kind=pb.RelationKind.Value(f"RELATION_KIND_{r.kind.value}"),
        subject=f"entities/{r.subject}",
        target=r.target if keyed else f"entities/{r.target}",
        source_system=r.source_system,
        source_record_id=r.source_record_id,
        grading=grading_to_proto(r.grading),
        valid_from=r.valid_from.isoformat() if r.valid_from else "",
        valid_to=r.valid_to.isoformat() if r.valid_to else "",
    )
