"""Assembly of the briefing pack against fakes of the gRPC stubs, and rendering it."""

from __future__ import annotations

import io
from typing import Any

import docx as python_docx
import grpc
import pypdfium2
import pytest
from google.protobuf.message import Message
from toex.entity.v1 import entity_pb2
from toex.tasking.v1 import tasking_pb2
from toex.type.v1 import force_pb2, region_pb2, security_pb2, threat_pb2
from toex_products import render
from toex_products.grpc_sources import GrpcSources
from toex_products.pack import assemble

JOB = "regions/EMSOU/jobs/8f14e45f"


class Denied(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.PERMISSION_DENIED


class FakeTasking:
    def __init__(self, job: tasking_pb2.Job) -> None:
        self.job = job
        self.metadata: list[Any] = []

    def GetJob(self, request: tasking_pb2.GetJobRequest, metadata: Any = None) -> tasking_pb2.GetJobResponse:
        assert request.name == JOB
        return tasking_pb2.GetJobResponse(job=self.job)


class FakeEntity:
    def __init__(self, entities: dict[str, entity_pb2.Entity], denied: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.entities = entities
        self.denied = denied

    def GetEntity(
        self, request: entity_pb2.GetEntityRequest, metadata: Any = None
    ) -> entity_pb2.GetEntityResponse:
        if request.name in self.denied:
            raise Denied()
        return entity_pb2.GetEntityResponse(entity=self.entities[request.name])


def _call(service: str, method: Any, request: Message) -> Any:
    return method(request, metadata=[("authorization", "Bearer caller"), ("x-toex-purpose", JOB)])


def _job(**extra: Any) -> tasking_pb2.Job:
    return tasking_pb2.Job(
        name=JOB,
        operation_name="Op Kestrel",
        owning_region=region_pb2.REGION_EMSOU,
        handling=security_pb2.HANDLING_CODE_P,
        description="County line into Nottingham",
        **extra,
    )


def _entity(name: str, display: str, other_region: bool = False) -> entity_pb2.Entity:
    entity = entity_pb2.Entity(name=name, display_name=display)
    entity.records.add(name=f"{name}/records/1", region=region_pb2.REGION_EMSOU)
    if other_region:
        entity.other_regions.add(region=region_pb2.REGION_NW, contact_role="NW intelligence manager")
    return entity


def test_empty_job_says_so_in_every_section() -> None:
    pack = assemble(GrpcSources(_call, lambda: FakeTasking(_job()), lambda: FakeEntity({})), JOB)
    titles = {s.title: s for s in pack.sections}
    assert titles["Notes"].is_empty and titles["Notes"].empty == "No notes on this job."
    assert titles["Subjects"].is_empty and titles["Subjects"].empty == "No subject entities on this job."
    assert titles["Safeguarding referrals"].is_empty
    assert titles["Annex: records used, with grading"].empty == "No records used."
    assert not titles["Job"].is_empty
    assert pack.handling == "P" and pack.classification == "OFFICIAL-SENSITIVE"


def test_entities_deconfliction_and_annex() -> None:
    job = _job(subject_entity_ids=["entities/a", "entities/b"])
    entities = {
        "entities/a": _entity("entities/a", "John SMITH"),
        "entities/b": _entity("entities/b", "Ann LEE", True),
    }
    pack = assemble(GrpcSources(_call, lambda: FakeTasking(job), lambda: FakeEntity(entities)), JOB)
    titles = {s.title: s for s in pack.sections}
    assert [r.label for r in titles["Subjects"].rows] == ["John SMITH", "Ann LEE"]
    [note] = titles["Deconfliction"].rows
    assert (
        note.label == "Ann LEE" and note.text == "Another region holds this (NW), ask NW intelligence manager"
    )
    assert len(titles["Annex: records used, with grading"].rows) == 2


def test_referrals_name_the_referral_never_its_subject() -> None:
    job = _job()
    job.linked_referrals.add(
        referral="referrals/r1", state="SENT", concerns=["MODERN_SLAVERY"], risk_level="HIGH"
    )
    pack = assemble(GrpcSources(_call, lambda: FakeTasking(job), lambda: FakeEntity({})), JOB)
    [row] = next(s for s in pack.sections if s.title == "Safeguarding referrals").rows
    assert row.label == "referrals/r1"
    assert row.text.startswith("SENT  modern slavery  risk high")


def test_a_caller_without_access_gets_an_error_not_a_partial_pack() -> None:
    job = _job(subject_entity_ids=["entities/a", "entities/secret"])
    fake = FakeEntity({"entities/a": _entity("entities/a", "John SMITH")}, denied={"entities/secret"})
    with pytest.raises(grpc.RpcError):
        assemble(GrpcSources(_call, lambda: FakeTasking(job), lambda: fake), JOB)


def _pdf_text(data: bytes) -> list[str]:
    document = pypdfium2.PdfDocument(data)
    return [document[i].get_textpage().get_text_range() for i in range(len(document))]


def test_pdf_has_cover_and_marking_on_every_page() -> None:
    job = _job(subject_entity_ids=[f"entities/{i}" for i in range(60)])
    entities = {f"entities/{i}": _entity(f"entities/{i}", f"Person {i}") for i in range(60)}
    pack = assemble(GrpcSources(_call, lambda: FakeTasking(job), lambda: FakeEntity(entities)), JOB)
    pages = _pdf_text(render.pdf(pack))
    assert len(pages) > 2
    assert "SIO briefing pack" in pages[0] and "Op Kestrel" in pages[0]
    for page in pages:
        assert page.count("OFFICIAL-SENSITIVE | Handling code: P") == 2
    assert "No notes on this job." in "".join(pages)


def test_docx_has_marking_in_header_and_footer() -> None:
    pack = assemble(GrpcSources(_call, lambda: FakeTasking(_job()), lambda: FakeEntity({})), JOB)
    document = python_docx.Document(io.BytesIO(render.docx(pack)))
    section = document.sections[0]
    assert section.header.paragraphs[0].text == "OFFICIAL-SENSITIVE | Handling code: P"
    assert section.footer.paragraphs[0].text == "OFFICIAL-SENSITIVE | Handling code: P"
    assert "No notes on this job." in [p.text for p in document.paragraphs]


def test_requesting_force_threat_and_feedback_are_shown_when_present() -> None:
    job = _job(
        requesting_force=force_pb2.FORCE_NOTTINGHAMSHIRE, threat_category=threat_pb2.THREAT_CATEGORY_CSE
    )
    job.feedback.rating = 4
    job.feedback.comment = "Led to two arrests"
    pack = assemble(GrpcSources(_call, lambda: FakeTasking(job), lambda: FakeEntity({})), JOB)
    rows = {r.label: r.text for r in pack.sections[0].rows}
    assert rows["Requesting force"] == "NOTTINGHAMSHIRE"
    assert rows["Threat category"] == "CSE"
    assert rows["Feedback"] == "4/5 Led to two arrests"
    plain = assemble(GrpcSources(_call, lambda: FakeTasking(_job()), lambda: FakeEntity({})), JOB)
    assert {"Requesting force", "Threat category", "Feedback"}.isdisjoint(
        r.label for r in plain.sections[0].rows
    )
