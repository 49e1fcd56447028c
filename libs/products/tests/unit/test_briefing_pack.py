"""Assembly of the briefing pack against fakes of the gRPC stubs, and rendering it."""

from __future__ import annotations

import io
import threading
from typing import Any

import docx as python_docx
import grpc
import pypdfium2
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
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


def test_each_subject_shows_its_records_provenance_and_grading() -> None:
    entity = _entity("entities/a", "John SMITH")
    record = entity.records[0]
    record.ref.source_system = "niche-emsou"
    record.ref.source_record_id = "N-4471"
    record.ingest_time.FromSeconds(1_700_000_000)  # 2023-11-14
    record.ingested_by = "service-account-niche"
    record.grading.CopyFrom(
        entity_pb2.Grading(
            source_evaluation=entity_pb2.SOURCE_EVALUATION_2,
            intelligence_assessment=entity_pb2.INTELLIGENCE_ASSESSMENT_B,
            handling=security_pb2.HANDLING_CODE_P,
        )
    )
    job = _job(subject_entity_ids=["entities/a"])
    pack = assemble(
        GrpcSources(_call, lambda: FakeTasking(job), lambda: FakeEntity({"entities/a": entity})), JOB
    )
    [subject] = {s.title: s for s in pack.sections}["Subjects"].rows
    assert subject.text.split("\n") == [
        "entities/a",
        "record entities/a/records/1: EMSOU  source niche-emsou N-4471  stored 2023-11-14  "
        "by service-account-niche  grading: 2/B/P",
    ]
    pages = pypdfium2.PdfDocument(render.pdf(pack))
    text = "".join(pages[i].get_textpage().get_text_range() for i in range(len(pages)))
    assert "source niche-emsou N-4471" in text


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
    # A row's label is never left at the foot of a page with its text on the next.
    for i in range(60):
        label, text = f"Person {i}\r\n", f"entities/{i}\r\n"
        assert any(label in page and text in page for page in pages), i


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

    def __init__(self, picture: bytes, datasets: int = 1, anpr: bool = False) -> None:
        self.picture = picture
        self.datasets = datasets
        self.anpr = anpr
        self.seen: list[tuple[str, Message, Any]] = []
        self._lock = threading.Lock()

    def _saw(self, name: str, request: Any, metadata: Any) -> None:
        with self._lock:
            self.seen.append((name, request, metadata))

    def ListDatasets(self, request: Any, metadata: Any = None) -> Any:
        from toex.comms.v1 import comms_pb2, resources_pb2

        self._saw("ListDatasets", request, metadata)
        response = comms_pb2.ListDatasetsResponse()
        for i in range(self.datasets):
            response.datasets.add(
                name=f"regions/EMSOU/datasets/d{i}",
                kind=resources_pb2.DATASET_KIND_CDR,
                display_name=f"O2 billing {i}",
                rows_read=1200,
                rows_accepted=1198,
                source_filename=f"o2-{i}.csv",
                content_sha256="ab" * 32,
                region=region_pb2.REGION_EMSOU,
                handling=security_pb2.HANDLING_CODE_P,
                job=JOB,
            )
        if self.anpr:
            response.datasets.add(
                name="regions/EMSOU/datasets/anpr1",
                kind=resources_pb2.DATASET_KIND_ANPR,
                display_name="M1 cameras",
                rows_read=5000,
                rows_accepted=5000,
                region=region_pb2.REGION_EMSOU,
                handling=security_pb2.HANDLING_CODE_C,
                job=JOB,
            )
        return response

    def FindColocations(self, request: Any, metadata: Any = None) -> Any:
        from toex.comms.v1 import comms_pb2

        self._saw("FindColocations", request, metadata)
        response = comms_pb2.FindColocationsResponse()
        response.colocations.add(
            number_a="+447700900001",
            number_b="+447700900444",
            occasion_count=7,
            cells=["234-10-1001-55", "234-10-1001-56"],
            first_time=Timestamp(seconds=1_709_542_800),
            last_time=Timestamp(seconds=1_710_000_000),
            in_contact=True,
        )
        return response

    def FindConvoys(self, request: Any, metadata: Any = None) -> Any:
        from toex.comms.v1 import comms_pb2

        self._saw("FindConvoys", request, metadata)
        response = comms_pb2.FindConvoysResponse()
        response.convoys.add(
            vrm_a="AB12CDE",
            vrm_b="XY99ZZZ",
            occasion_count=4,
            cameras=["M1-J24-N", "M1-J25-N"],
            day_count=3,
            median_gap_seconds=45,
            first_seen_time=Timestamp(seconds=1_709_542_800),
            last_seen_time=Timestamp(seconds=1_710_000_000),
        )
        return response

    def GetTravelPattern(self, request: Any, metadata: Any = None) -> Any:
        from toex.comms.v1 import comms_pb2

        self._saw("GetTravelPattern", request, metadata)
        if request.vrm != "AB12CDE":
            return comms_pb2.GetTravelPatternResponse(vrm=request.vrm)
        response = comms_pb2.GetTravelPatternResponse(
            vrm="AB12CDE",
            read_count=12,
            by_hour=[0] * 7 + [9] + [0] * 15 + [3],
            by_weekday=[2, 0, 0, 0, 10, 0, 0],
        )
        response.locations.add(camera="M1-J24-N", location="M1 J24 northbound", read_count=8, usual_hour=7)
        response.routes.add(from_camera="M1-J24-N", to_camera="M1-J25-N", count=5, median_seconds=600)
        return response

    def FindCommonContacts(self, request: Any, metadata: Any = None) -> Any:
        from toex.comms.v1 import comms_pb2

        self._saw("FindCommonContacts", request, metadata)
        response = comms_pb2.FindCommonContactsResponse()
        response.contacts.add(number="+447700900999", target_count=2, contact_count=31)
        return response

    def RankSuspects(self, request: Any, metadata: Any = None) -> Any:
        from toex.comms.v1 import comms_pb2

        self._saw("RankSuspects", request, metadata)
        response = comms_pb2.RankSuspectsResponse()
        response.suspects.add(number="+447700900555", score=24.5, reason="in contact with both targets")
        return response

    def ListWatchlistContacts(self, request: Any, metadata: Any = None) -> Any:
        from toex.comms.v1 import comms_pb2

        self._saw("ListWatchlistContacts", request, metadata)
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

        self._saw("Export", request, metadata)
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
        "FindColocations",
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
        # The service's job filter.
        found = [r for r in self.referrals if not request.job or r.linked_job == request.job]
        start = int(request.page_token or 0)
        end = start + self.page_size
        return safeguarding_pb2.ListReferralsResponse(
            referrals=found[start:end], next_page_token=str(end) if end < len(found) else ""
        )


class FakePnd:
    def __init__(self, records: list[Any]) -> None:
        self.records = records
        self.requests: list[Any] = []

    def ListIntelligence(self, request: Any, metadata: Any = None) -> Any:
        from toex.pnd.v1 import pnd_pb2

        assert ("x-toex-purpose", JOB) in metadata
        self.requests.append(request)
        # The service's job filter.
        return pnd_pb2.ListIntelligenceResponse(
            records=[r for r in self.records if not request.job or r.job == request.job]
        )


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
    # The job filter: the two linked referrals fit in one page of two.
    assert len(safeguarding.requests) == 1
    assert safeguarding.requests[0].parent == "regions/EMSOU" and safeguarding.requests[0].job == JOB


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
    sections = {s.title: s for s in pack.sections}
    [ms1] = [r for r in sections["Safeguarding referrals"].rows if r.label.startswith("MS1")]
    assert ms1.text == "APPROVED  labour exploitation  notification reference MS1-7Q2K"
    # In the annex too, by its notification reference alone.
    [source] = [r for r in sections["Annex: records used, with grading"].rows if r.label.startswith("MS1")]
    assert source.label == "MS1 Duty to Notify (anonymous), reference MS1-7Q2K"
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
    assert pnd.requests[0].job == JOB
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


def _vehicle(name: str, vrm: str) -> entity_pb2.Entity:
    return entity_pb2.Entity(name=name, display_name=vrm, entity_type=entity_pb2.RECORD_TYPE_VEHICLE)


def _comms_job() -> tuple[tasking_pb2.Job, dict[str, entity_pb2.Entity]]:
    entities = {
        "entities/p1": _phone("entities/p1", "+447700900001"),
        "entities/p2": _phone("entities/p2", "+447700900002"),
        "entities/v1": _vehicle("entities/v1", "AB12CDE"),
        "entities/v2": _vehicle("entities/v2", "GH34JKL"),
    }
    return _job(subject_entity_ids=list(entities)), entities


class TogetherComms(FakeComms):
    """The co-location and ANPR reads meet at a barrier: made one after another, they time out."""

    def __init__(self, parties: int) -> None:
        super().__init__(_png(), anpr=True)
        self.barrier = threading.Barrier(parties, timeout=10)

    def FindColocations(self, request: Any, metadata: Any = None) -> Any:
        self.barrier.wait()
        return super().FindColocations(request, metadata)

    def FindConvoys(self, request: Any, metadata: Any = None) -> Any:
        self.barrier.wait()
        return super().FindConvoys(request, metadata)

    def GetTravelPattern(self, request: Any, metadata: Any = None) -> Any:
        self.barrier.wait()
        return super().GetTravelPattern(request, metadata)


def test_colocation_travel_and_convoys_are_read_at_once_with_the_job_as_purpose() -> None:
    job, entities = _comms_job()
    comms = TogetherComms(parties=4)  # co-location, convoys, two travel patterns
    pack = assemble(
        GrpcSources(_call, lambda: FakeTasking(job), lambda: FakeEntity(entities), lambda: comms), JOB
    )
    titles = {s.title: s for s in pack.sections}
    [colocation] = titles["Comms: co-location"].rows
    assert colocation.label == "+447700900001 with +447700900444"
    assert colocation.text == (
        "7 occasions on 2 cells (234-10-1001-55, 234-10-1001-56)  "
        "2024-03-04 09:00 to 2024-03-09 16:00  also in direct contact"
    )
    travel = titles["ANPR: travel patterns"].rows
    assert [r.label for r in travel] == ["AB12CDE", "Not read"]
    assert travel[0].text == (
        "12 reads  seen at M1 J24 northbound (8 reads, usually 07:00)  busiest hour 07:00  "
        "busiest day Fri  routes M1-J24-N to M1-J25-N x5 (median 10 min)"
    )
    assert travel[1].text == "No reads in this job's ANPR data: GH34JKL"
    [convoy] = titles["ANPR: convoys"].rows
    assert convoy.label == "AB12CDE with XY99ZZZ"
    assert convoy.text.startswith(
        "4 joint sightings on 3 days at 2 cameras (M1-J24-N, M1-J25-N)  median gap 45 s"
    )
    seen: dict[str, list[Any]] = {}
    for name, request, metadata in comms.seen:
        assert ("x-toex-purpose", JOB) in metadata, name
        seen.setdefault(name, []).append(request)
    [colocations] = seen["FindColocations"]
    assert colocations.scope.job == JOB and list(colocations.targets) == ["+447700900001", "+447700900002"]
    [convoys] = seen["FindConvoys"]
    assert convoys.scope.job == JOB and convoys.scope.parent == "regions/EMSOU"
    assert list(convoys.vrms) == ["AB12CDE", "GH34JKL"]
    assert sorted(r.vrm for r in seen["GetTravelPattern"]) == ["AB12CDE", "GH34JKL"]
    assert all(r.scope.job == JOB for r in seen["GetTravelPattern"])
    # The new pages render, marked.
    pages = _pdf_text(render.pdf(pack))
    text = "".join(pages)
    for heading in ("Comms: co-location", "ANPR: travel patterns", "ANPR: convoys"):
        assert heading in text
    assert all(page.count("OFFICIAL-SENSITIVE | Handling code: P") == 2 for page in pages)


def test_anpr_sections_say_when_there_is_no_anpr_data() -> None:
    job, entities = _comms_job()
    comms = FakeComms(_png())  # call data only
    pack = assemble(
        GrpcSources(_call, lambda: FakeTasking(job), lambda: FakeEntity(entities), lambda: comms), JOB
    )
    titles = {s.title: s for s in pack.sections}
    assert titles["ANPR: travel patterns"].is_empty
    assert titles["ANPR: travel patterns"].empty == (
        "No travel patterns (no vehicle subjects, or no ANPR data, on this job)."
    )
    assert titles["ANPR: convoys"].is_empty
    assert not titles["Comms: co-location"].is_empty
    assert {"FindConvoys", "GetTravelPattern"}.isdisjoint(name for name, _, _ in comms.seen)


def test_convoys_without_vehicle_subjects_cover_the_jobs_anpr_data() -> None:
    comms = FakeComms(_png(), datasets=0, anpr=True)
    pack = assemble(
        GrpcSources(_call, lambda: FakeTasking(_job()), lambda: FakeEntity({}), lambda: comms), JOB
    )
    titles = {s.title: s for s in pack.sections}
    assert [r.label for r in titles["ANPR: convoys"].rows] == ["AB12CDE with XY99ZZZ"]
    assert titles["ANPR: travel patterns"].is_empty
    assert titles["Comms: co-location"].is_empty
    assert titles["Comms: co-location"].empty.startswith("No co-location")
    [(request, _)] = [(r, m) for name, r, m in comms.seen if name == "FindConvoys"]
    assert list(request.vrms) == []


def test_a_refused_colocation_or_anpr_read_withholds_its_section_only() -> None:
    class Refusing(FakeComms):
        def FindConvoys(self, request: Any, metadata: Any = None) -> Any:
            raise Denied()

        def GetTravelPattern(self, request: Any, metadata: Any = None) -> Any:
            raise Denied()

        def FindColocations(self, request: Any, metadata: Any = None) -> Any:
            raise Denied()

    job, entities = _comms_job()
    pack = assemble(
        GrpcSources(
            _call, lambda: FakeTasking(job), lambda: FakeEntity(entities), lambda: Refusing(_png(), anpr=True)
        ),
        JOB,
    )
    titles = {s.title: s for s in pack.sections}
    for title in ("Comms: co-location", "ANPR: travel patterns", "ANPR: convoys"):
        [row] = titles[title].rows
        assert row.label == "Withheld"
        assert row.text.startswith("Not shown: the comms service refused this caller (")
    assert [r.label for r in titles["Comms: ranked new numbers, with reasons"].rows] == [
        "+447700900555  score 24.5"
    ]


def test_a_refused_comms_list_withholds_every_comms_section() -> None:
    class Refusing(FakeComms):
        def ListDatasets(self, request: Any, metadata: Any = None) -> Any:
            raise Denied()

    job, entities = _comms_job()
    pack = assemble(
        GrpcSources(
            _call, lambda: FakeTasking(job), lambda: FakeEntity(entities), lambda: Refusing(_png(), anpr=True)
        ),
        JOB,
    )
    comms_sections = [s for s in pack.sections if s.title.startswith(("Comms", "ANPR"))]
    assert len(comms_sections) == 7
    assert all([r.label for r in s.rows] == ["Withheld"] for s in comms_sections)


def test_the_annex_lists_every_dataset_and_record_used_with_its_grading() -> None:
    from toex.pnd.v1 import pnd_pb2, pole_pb2

    entity = _entity("entities/a", "John SMITH")
    entity.records[0].grading.CopyFrom(
        entity_pb2.Grading(
            source_evaluation=entity_pb2.SOURCE_EVALUATION_2,
            intelligence_assessment=entity_pb2.INTELLIGENCE_ASSESSMENT_B,
            handling=security_pb2.HANDLING_CODE_P,
        )
    )
    job = _job(subject_entity_ids=["entities/a"])
    record = pnd_pb2.IntelligenceRecord(
        name="regions/EMSOU/intelligence/i1",
        region=region_pb2.REGION_EMSOU,
        kind=pole_pb2.POLE_KIND_PERSON,
        grading=pole_pb2.Grading(
            source_evaluation=pole_pb2.SOURCE_EVALUATION_1,
            intelligence_assessment=pole_pb2.INTELLIGENCE_ASSESSMENT_A,
            handling=security_pb2.HANDLING_CODE_C,
            handling_conditions="no onward disclosure",
        ),
        job=JOB,
    )
    referrals = _referrals()
    referrals[0].region = region_pb2.REGION_EMSOU
    referrals[0].handling = security_pb2.HANDLING_CODE_P
    pack = assemble(
        GrpcSources(
            _call,
            lambda: FakeTasking(job),
            lambda: FakeEntity({"entities/a": entity}),
            lambda: FakeComms(_png(), anpr=True),
            safeguarding=lambda: FakeSafeguarding(referrals),
            pnd=lambda: FakePnd([record]),
        ),
        JOB,
    )
    annex = next(s for s in pack.sections if s.title == "Annex: records used, with grading").rows
    assert [(r.label, r.text) for r in annex] == [
        ("Record entities/a/records/1 (John SMITH)", "EMSOU  grading: 2/B/P"),
        (
            "Dataset O2 billing 0 (regions/EMSOU/datasets/d0)",
            "EMSOU  CDR  1198 rows  file o2-0.csv  sha256 abababababababab  "
            "grading: ?/?/P (a dataset is graded by its handling code only)",
        ),
        (
            "Dataset M1 cameras (regions/EMSOU/datasets/anpr1)",
            "EMSOU  ANPR  5000 rows  grading: ?/?/C (a dataset is graded by its handling code only)",
        ),
        (
            "Referral regions/EMSOU/referrals/r1",
            "EMSOU  grading: ?/?/P (a referral is graded by its handling code only)",
        ),
        (
            "MS1 Duty to Notify (anonymous), reference MS1-7Q2K",
            "grading: ?/?/C (a referral is graded by its handling code only)",
        ),
        (
            "PND record regions/EMSOU/intelligence/i1",
            "EMSOU  PERSON  grading: 1/A/C (conditions: no onward disclosure)",
        ),
    ]
