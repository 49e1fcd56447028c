"""`Sources` over gRPC: each read is a call to the owning service with the caller's token and
purpose (the `call` given does that), so authorisation, grants and audit stay in the services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message
from toex.entity.v1 import entity_pb2
from toex.tasking.v1 import tasking_pb2
from toex.type.v1 import force_pb2, region_pb2, security_pb2, threat_pb2

from toex_products.pack import EntityFacts, JobFacts, Row

# call(service, stub_method, request) -> response; raises on any failure.
Call = Callable[[str, Callable[..., Any], Message], Any]


def _enum(descriptor: Any, value: int, prefix: str) -> str:
    if not value:
        return ""
    return str(descriptor.values_by_number[value].name).removeprefix(prefix)


def _when(ts: Any) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M") if ts.seconds else ""


def job_facts(job: tasking_pb2.Job) -> JobFacts:
    handling = _enum(security_pb2.HandlingCode.DESCRIPTOR, job.handling, "HANDLING_CODE_")
    fields = [
        Row("State", _enum(tasking_pb2.JobState.DESCRIPTOR, job.state, "JOB_STATE_")),
        Row("Type", _enum(tasking_pb2.JobType.DESCRIPTOR, job.job_type, "JOB_TYPE_")),
        Row("Priority", _enum(tasking_pb2.Priority.DESCRIPTOR, job.priority, "PRIORITY_")),
        Row("Due", _when(job.due_time) + (" OVERDUE" if job.overdue else "")),
        Row("Owning region", _enum(region_pb2.Region.DESCRIPTOR, job.owning_region, "REGION_")),
        Row("Requesting unit", job.requesting_unit),
        Row("Requesting officer", job.requesting_officer),
        Row("Description", job.description),
    ]
    # Shown when the job has them.
    if job.requesting_force:
        fields.append(
            Row(
                "Requesting force",
                _enum(force_pb2.Force.DESCRIPTOR, job.requesting_force, "FORCE_"),
            )
        )
    if job.threat_category:
        fields.append(
            Row(
                "Threat category",
                _enum(threat_pb2.ThreatCategory.DESCRIPTOR, job.threat_category, "THREAT_CATEGORY_"),
            )
        )
    if job.HasField("feedback"):
        fields.append(Row("Feedback", f"{job.feedback.rating}/5 {job.feedback.comment}".strip()))
    referrals = []
    for r in job.linked_referrals:
        # The referral is named, never its subject (an MS1 route carries no identifying details).
        parts = [r.state or "state unknown", ", ".join(c.replace("_", " ").lower() for c in r.concerns)]
        if r.risk_level:
            parts.append(f"risk {r.risk_level.replace('_', ' ').lower()}")
        if r.update_time.seconds:
            parts.append(f"updated {_when(r.update_time)}")
        referrals.append(Row(r.referral, "  ".join(p for p in parts if p)))
    return JobFacts(
        name=job.name,
        operation=job.operation_name,
        handling=handling,
        fields=[f for f in fields if f.text],
        notes=[Row(f"{_when(n.create_time)} {n.author}", n.text) for n in job.notes],
        researchers=[
            Row(
                a.username,
                _enum(region_pb2.Region.DESCRIPTOR, a.region, "REGION_")
                + (f", since {_when(a.assign_time)}" if a.assign_time.seconds else ""),
            )
            for a in job.assignees
        ],
        product=job.product,
        referrals=referrals,
        subject_ids=list(job.subject_entity_ids),
    )


def entity_facts(entity: entity_pb2.Entity) -> EntityFacts:
    records = []
    for rec in entity.records:
        grading = ", ".join(
            f"{f.name} {v if not f.enum_type else f.enum_type.values_by_number[v].name}"
            for f, v in rec.grading.ListFields()
        )
        where = _enum(region_pb2.Region.DESCRIPTOR, rec.region, "REGION_")
        records.append(Row(rec.name, f"{where}  grading: {grading or 'not graded'}"))
    deconfliction = [
        f"Another region holds this ({_enum(region_pb2.Region.DESCRIPTOR, d.region, 'REGION_')}), "
        f"ask {d.contact_role or 'its duty officer'}"
        for d in entity.other_regions
    ]
    return EntityFacts(
        name=entity.name,
        display_name=entity.display_name,
        kind=_enum(entity_pb2.RecordType.DESCRIPTOR, entity.entity_type, "RECORD_TYPE_"),
        records=records,
        deconfliction=deconfliction,
    )


class GrpcSources:
    """`tasking` and `entity` make the services' stubs; a stub is made only when first needed."""

    def __init__(self, call: Call, tasking: Callable[[], Any], entity: Callable[[], Any]) -> None:
        self._call = call
        self._tasking = tasking
        self._entity = entity

    def job(self, name: str) -> JobFacts:
        response = self._call("tasking", self._tasking().GetJob, tasking_pb2.GetJobRequest(name=name))
        return job_facts(response.job)

    def entity(self, name: str) -> EntityFacts:
        response = self._call("entity", self._entity().GetEntity, entity_pb2.GetEntityRequest(name=name))
        return entity_facts(response.entity)
