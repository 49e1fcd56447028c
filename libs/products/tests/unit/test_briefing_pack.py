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

    def details(self) -> str:
        return "ListReferrals needs one of the roles: safeguarding_officer"


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


def test_annex_prints_grading_as_the_3x5x2_code() -> None:
    entity = entity_pb2.Entity(name="entities/a", display_name="John SMITH")
    entity.records.add(
        name="entities/a/records/1",
        region=region_pb2.REGION_EMSOU,
        grading=entity_pb2.Grading(
            source_evaluation=entity_pb2.SOURCE_EVALUATION_1,
            intelligence_assessment=entity_pb2.INTELLIGENCE_ASSESSMENT_B,
            handling=security_pb2.HANDLING_CODE_P,
        ),
    )
    entity.records.add(
        name="entities/a/records/2",
        region=region_pb2.REGION_EMSOU,
        grading=entity_pb2.Grading(
            source_evaluation=entity_pb2.SOURCE_EVALUATION_3,
            intelligence_assessment=entity_pb2.INTELLIGENCE_ASSESSMENT_E,
            handling_conditions="not for disclosure to the defence",
        ),
    )
    entity.records.add(name="entities/a/records/3", region=region_pb2.REGION_EMSOU)
    job = _job(subject_entity_ids=["entities/a"])
    pack = assemble(
        GrpcSources(_call, lambda: FakeTasking(job), lambda: FakeEntity({"entities/a": entity})), JOB
    )
    annex = [r.text for r in next(s for s in pack.sections if s.title.startswith("Annex")).rows]
    assert annex == [
        "EMSOU  grading: 1/B/P",
        "EMSOU  grading: 3/E/C (conditions: not for disclosure to the defence)",
        "EMSOU  grading: not graded",
    ]
    assert "source_evaluation" not in "".join(_pdf_text(render.pdf(pack)))


class FakeComms:
    """Answers the comms reads; records each request and the metadata it came with."""

    def __init__(self, picture: bytes, datasets: int = 1) -> None:
        self.picture = picture
        self.datasets = datasets
        self.seen: list[tuple[str, Message, Any]] = []

    def ListDatasets(self, request: Any, metadata: Any = None) -> Any:
        from toex.comms.v1 import comms_pb2, resources_pb2

        self.seen.append(("ListDatasets", request, metadata))
        response = comms_pb2.ListDatasetsResponse()
        for i in range(self.datasets):
            response.datasets.add(
                name=f"regions/EMSOU/datasets/d{i}",
                kind=resources_pb2.DATASET_KIND_CDR,
                display_name=f"O2 billing {i}",
                rows_read=1200,
                job=JOB,
            )
        return response

    def FindCommonContacts(self, request: Any, metadata: Any = None) -> Any:
        from toex.comms.v1 import comms_pb2

        self.seen.append(("FindCommonContacts", request, metadata))
        response = comms_pb2.FindCommonContactsResponse()
        response.contacts.add(number="+447700900999", target_count=2, contact_count=31)
        return response

    def RankSuspects(self, request: Any, metadata: Any = None) -> Any:
        from toex.comms.v1 import comms_pb2

        self.seen.append(("RankSuspects", request, metadata))
        response = comms_pb2.RankSuspectsResponse()
        response.suspects.add(number="+447700900555", score=24.5, reason="in contact with both targets")
        return response

    def ListWatchlistContacts(self, request: Any, metadata: Any = None) -> Any:
        from toex.comms.v1 import comms_pb2

        self.seen.append(("ListWatchlistContacts", request, metadata))
        response = comms_pb2.ListWatchlistContactsResponse()
        for dataset in ("regions/EMSOU/datasets/d0", "regions/EMSOU/datasets/not-this-job"):
            contact = response.contacts.add(
                dataset=dataset, number_a="+447700900001", number_b="+447700900777", contact_count=4
            )
            contact.list_a.name = "regions/EMSOU/watchlists/w1"
            contact.list_b.name = "regions/EMSOU/watchlists/w2"
        return response

    def Export(self, request: Any, metadata: Any = None) -> Any:
        from toex.comms.v1 import comms_pb2

        self.seen.append(("Export", request, metadata))
        half = len(self.picture) // 2
        yield comms_pb2.ExportResponse(filename="network.png", chunk=self.picture[:half])
        yield comms_pb2.ExportResponse(chunk=self.picture[half:])


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def _phone(name: str, number: str) -> entity_pb2.Entity:
    return entity_pb2.Entity(name=name, display_name=number, entity_type=entity_pb2.RECORD_TYPE_PHONE)


def test_comms_sections_run_over_the_jobs_datasets_with_the_job_as_purpose() -> None:
    from toex.comms.v1 import comms_pb2

    job = _job(subject_entity_ids=["entities/p1", "entities/p2", "entities/person"])
    entities = {
        "entities/p1": _phone("entities/p1", "+447700900001"),
        "entities/p2": _phone("entities/p2", "+447700900002"),
        "entities/person": _entity("entities/person", "John SMITH"),
    }
    comms = FakeComms(_png())
    pack = assemble(
        GrpcSources(_call, lambda: FakeTasking(job), lambda: FakeEntity(entities), lambda: comms), JOB
    )
    titles = {s.title: s for s in pack.sections}
    [dataset] = titles["Comms datasets"].rows
    assert dataset.label == "O2 billing 0" and dataset.text.startswith("CDR  1200 rows")
    network = titles["Comms: network picture, common contacts"]
    assert network.image == comms.picture
    assert [r.label for r in network.rows] == ["+447700900999"]
    [suspect] = titles["Comms: ranked new numbers, with reasons"].rows
    assert suspect.label == "+447700900555  score 24.5" and suspect.text == "in contact with both targets"
    calls = {name: (request, metadata) for name, request, metadata in comms.seen}
    assert set(calls) == {
        "ListDatasets",
        "FindCommonContacts",
        "RankSuspects",
        "Export",
        "ListWatchlistContacts",
    }
    [watch] = titles["Comms: watchlist contacts"].rows  # only the job's dataset's contact
    assert watch.label == "+447700900001 - +447700900777" and watch.text.startswith("4 contacts")
    for name, (request, metadata) in calls.items():
        assert ("x-toex-purpose", JOB) in metadata, name
        if name not in ("ListDatasets", "ListWatchlistContacts"):
            assert request.scope.job == JOB and request.scope.parent == "regions/EMSOU"  # type: ignore[attr-defined]
            assert list(request.targets) == ["+447700900001", "+447700900002"]  # type: ignore[attr-defined]
    assert calls["ListDatasets"][0].job == JOB  # type: ignore[attr-defined]
    assert calls["Export"][0].format == comms_pb2.EXPORT_FORMAT_PNG  # type: ignore[attr-defined]
    # The picture is in the PDF: a page carries an image object.
    document = pypdfium2.PdfDocument(render.pdf(pack))
    images = [
        obj
        for i in range(len(document))
        for obj in document[i].get_objects()
        if obj.type == pypdfium2.raw.FPDF_PAGEOBJ_IMAGE
    ]
    assert len(images) == 1
    docx_file = python_docx.Document(io.BytesIO(render.docx(pack)))
    assert len(docx_file.inline_shapes) == 1


def test_comms_without_phone_subjects_lists_datasets_and_runs_no_analysis() -> None:
    comms = FakeComms(_png())
    pack = assemble(
        GrpcSources(_call, lambda: FakeTasking(_job()), lambda: FakeEntity({}), lambda: comms), JOB
    )
    titles = {s.title: s for s in pack.sections}
    assert len(titles["Comms datasets"].rows) == 1
    assert titles["Comms: network picture, common contacts"].is_empty
    assert [name for name, _, _ in comms.seen] == ["ListDatasets"]


def test_a_comms_read_refused_fails_the_pack() -> None:
    class DeniedComms(FakeComms):
        def RankSuspects(self, request: Any, metadata: Any = None) -> Any:
            raise Denied()

    job = _job(subject_entity_ids=["entities/p1"])
    entities = {"entities/p1": _phone("entities/p1", "+447700900001")}
    with pytest.raises(grpc.RpcError):
        assemble(
            GrpcSources(
                _call, lambda: FakeTasking(job), lambda: FakeEntity(entities), lambda: DeniedComms(_png())
            ),
            JOB,
        )


class FakeSafeguarding:
    def __init__(self, referrals: list[Any], page_size: int = 2) -> None:
        self.referrals = referrals
        self.page_size = page_size
        self.requests: list[Any] = []

    def ListReferrals(self, request: Any, metadata: Any = None) -> Any:
        from toex.safeguarding.v1 import safeguarding_pb2

        assert ("x-toex-purpose", JOB) in metadata
        self.requests.append(request)
        start = int(request.page_token or 0)
        end = start + self.page_size
        return safeguarding_pb2.ListReferralsResponse(
            referrals=self.referrals[start:end], next_page_token=str(end) if end < len(self.referrals) else ""
        )


class FakePnd:
    def __init__(self, records: list[Any]) -> None:
        self.records = records
        self.requests: list[Any] = []

    def ListIntelligence(self, request: Any, metadata: Any = None) -> Any:
        from toex.pnd.v1 import pnd_pb2

        assert ("x-toex-purpose", JOB) in metadata
        self.requests.append(request)
        return pnd_pb2.ListIntelligenceResponse(records=self.records)


def _referrals() -> list[Any]:
    from google.protobuf.timestamp_pb2 import Timestamp
    from toex.safeguarding.v1 import safeguarding_pb2 as sg

    due = Timestamp(seconds=1_790_000_000)
    child = sg.Referral(
        name="regions/EMSOU/referrals/r1",
        state=sg.REFERRAL_STATE_SUBMITTED,
        subject=sg.Subject(entity_id="entities/child-1", date_of_birth="2011-03-04", local_authority="Derby"),
        concerns=[sg.CONCERN_CHILD_CRIMINAL_EXPLOITATION],
        risk_level=sg.RISK_LEVEL_HIGH,
        destinations=[sg.DESTINATION_CHILDRENS_SOCIAL_CARE],
        linked_job=JOB,
    )
    child.clocks.add(kind=sg.CLOCK_KIND_LOCAL_AUTHORITY_DECISION, due_time=due, overdue=True)
    ms1 = sg.Referral(
        name="regions/EMSOU/referrals/r2",
        state=sg.REFERRAL_STATE_APPROVED,
        subject=sg.Subject(
            entity_id="entities/adult-7", date_of_birth="1990-01-02", local_authority="Leicester"
        ),
        concerns=[sg.CONCERN_LABOUR_EXPLOITATION],
        risk_level=sg.RISK_LEVEL_MEDIUM,
        destinations=[sg.DESTINATION_DUTY_TO_NOTIFY],
        linked_job=JOB,
        duty_to_notify=sg.DutyToNotify(reference="MS1-7Q2K", concerns=[sg.CONCERN_LABOUR_EXPLOITATION]),
    )
    ms1.evidence.add()
    other_job = sg.Referral(
        name="regions/EMSOU/referrals/r3",
        linked_job="regions/EMSOU/jobs/other",
        state=sg.REFERRAL_STATE_DRAFT,
    )
    unlinked = sg.Referral(name="regions/EMSOU/referrals/r4", state=sg.REFERRAL_STATE_DRAFT)
    return [child, other_job, ms1, unlinked]


def test_safeguarding_section_lists_the_jobs_referrals_with_clocks_over_every_page() -> None:
    safeguarding = FakeSafeguarding(_referrals())
    pack = assemble(
        GrpcSources(
            _call, lambda: FakeTasking(_job()), lambda: FakeEntity({}), safeguarding=lambda: safeguarding
        ),
        JOB,
    )
    rows = next(s for s in pack.sections if s.title == "Safeguarding referrals").rows
    assert [r.label for r in rows] == ["regions/EMSOU/referrals/r1", "MS1 Duty to Notify (anonymous)"]
    assert rows[0].text == (
        "SUBMITTED  child criminal exploitation  risk high  to childrens social care  "
        "clock local authority decision: due 2026-09-21 14:13 OVERDUE"
    )
    assert len(safeguarding.requests) == 2 and safeguarding.requests[0].parent == "regions/EMSOU"


def test_an_ms1_route_shows_no_identifying_details() -> None:
    pack = assemble(
        GrpcSources(
            _call,
            lambda: FakeTasking(_job()),
            lambda: FakeEntity({}),
            safeguarding=lambda: FakeSafeguarding(_referrals()),
        ),
        JOB,
    )
    [ms1] = [r for s in pack.sections for r in s.rows if r.label.startswith("MS1")]
    assert ms1.text == "APPROVED  labour exploitation  notification reference MS1-7Q2K"
    text = "".join(_pdf_text(render.pdf(pack)))
    document = python_docx.Document(io.BytesIO(render.docx(pack)))
    cells = " ".join(c.text for t in document.tables for row in t.rows for c in row.cells)
    for identifying in ("adult-7", "1990-01-02", "Leicester", "referrals/r2", "medium"):
        assert identifying not in text and identifying not in cells
    # the non-MS1 referral's subject is never printed either
    for identifying in ("child-1", "2011-03-04", "Derby"):
        assert identifying not in text


def test_pnd_section_lists_what_was_submitted_for_the_job_and_its_sync_state() -> None:
    from toex.pnd.v1 import pnd_pb2, pole_pb2, sync_pb2

    synced = pnd_pb2.IntelligenceRecord(
        name="regions/EMSOU/intelligence/i1",
        kind=pole_pb2.POLE_KIND_PERSON,
        version=2,
        sync_state=sync_pb2.SYNC_STATE_SYNCED,
        pnd_id="PND-991",
        pnd_version=2,
        grading=pole_pb2.Grading(
            source_evaluation=pole_pb2.SOURCE_EVALUATION_2,
            intelligence_assessment=pole_pb2.INTELLIGENCE_ASSESSMENT_C,
            handling=security_pb2.HANDLING_CODE_P,
        ),
        job=JOB,
    )
    rejected = pnd_pb2.IntelligenceRecord(
        name="regions/EMSOU/intelligence/i2",
        kind=pole_pb2.POLE_KIND_VEHICLE,
        version=1,
        sync_state=sync_pb2.SYNC_STATE_REJECTED,
        job=JOB,
    )
    rejected.rejection_reasons.add(code="E104", field="vrm", description="not a valid VRM")
    other = pnd_pb2.IntelligenceRecord(name="regions/EMSOU/intelligence/i3", job="regions/EMSOU/jobs/other")
    pnd = FakePnd([synced, rejected, other])
    pack = assemble(
        GrpcSources(_call, lambda: FakeTasking(_job()), lambda: FakeEntity({}), pnd=lambda: pnd), JOB
    )
    rows = next(s for s in pack.sections if s.title == "PND submissions").rows
    assert [(r.label, r.text) for r in rows] == [
        ("regions/EMSOU/intelligence/i1", "PERSON  version 2  SYNCED (PND PND-991 v2)  grading 2/C/P"),
        ("regions/EMSOU/intelligence/i2", "VEHICLE  version 1  REJECTED  rejected: E104 vrm not a valid VRM"),
    ]
    assert pnd.requests[0].show_deleted and pnd.requests[0].parent == "regions/EMSOU"
    empty = assemble(
        GrpcSources(_call, lambda: FakeTasking(_job()), lambda: FakeEntity({}), pnd=lambda: FakePnd([other])),
        JOB,
    )
    assert next(s for s in empty.sections if s.title == "PND submissions").empty == (
        "No records submitted to the PND for this job."
    )


def test_a_role_that_may_not_list_referrals_sees_the_jobs_view_and_why_no_more() -> None:
    class Refusing(FakeSafeguarding):
        def ListReferrals(self, request: Any, metadata: Any = None) -> Any:
            raise Denied()

    job = _job()
    job.linked_referrals.add(referral="referrals/r1", state="SENT", concerns=["MODERN_SLAVERY"])
    pack = assemble(
        GrpcSources(
            _call, lambda: FakeTasking(job), lambda: FakeEntity({}), safeguarding=lambda: Refusing([])
        ),
        JOB,
    )
    rows = next(s for s in pack.sections if s.title == "Safeguarding referrals").rows
    assert [r.label for r in rows] == ["Withheld", "referrals/r1"]
    assert rows[0].text == (
        "Not shown: the safeguarding service refused this caller "
        "(ListReferrals needs one of the roles: safeguarding_officer)"
    )
