"""The entity, national overview and PND pages against fakes of those services: what each page
shows, what it sends (token, purpose, reason, request id), CSRF on every change, and each
refusal shown as the service gave it (NOT_FOUND exactly as not found)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from starlette.testclient import TestClient
from toex.entity.v1 import entity_pb2 as epb
from toex.oversight.v1 import oversight_pb2 as opb
from toex.pnd.v1 import pnd_pb2 as ppb
from toex.pnd.v1 import sync_pb2
from toex.type.v1 import region_pb2, security_pb2
from toex_console.app import create_app
from toex_console.charts import Step, bars, waterfall
from toex_console.config import Settings
from toex_console.entities import _undo

from .test_console import FakeOidc, FakeTasking, RpcError, signed_in

GRADING = epb.Grading(
    source_evaluation=epb.SOURCE_EVALUATION_2,
    intelligence_assessment=epb.INTELLIGENCE_ASSESSMENT_B,
    handling=security_pb2.HANDLING_CODE_P,
)
EXPLANATION = epb.MatchExplanation(
    record_a="regions/EMSOU/records/R1",
    record_b="regions/EMSOU/records/R2",
    prior_match_weight=-8.0,
    contributions=[
        epb.ComparisonContribution(comparison="surname", level="exact", match_weight=9.5, value_a="SMITH"),
        epb.ComparisonContribution(comparison="birth_date", level="transposed", match_weight=-1.25),
    ],
    match_weight=0.25,
    probability=0.54,
    decision=epb.MATCH_DECISION_REVIEW,
)


def an_entity(name: str = "entities/E1") -> epb.Entity:
    return epb.Entity(
        name=name,
        entity_type=epb.RECORD_TYPE_PERSON,
        display_name="Daniel <i>SMITH</i> (1984-03-12)",
        records=[
            epb.SourceRecord(
                name=f"regions/EMSOU/records/R{i}",
                ref=epb.SourceRecordRef(source_system="niche", source_record_id=f"N{i}"),
                region=region_pb2.REGION_EMSOU,
                grading=GRADING,
                ingested_by="researcher.emsou",
                person=epb.Person(given_name="Daniel", surname="SMITH", birth_date="1984-03-12"),
            )
            for i in (1, 2)
        ],
        other_regions=[
            epb.Deconfliction(region=region_pb2.REGION_ERSOU, contact_role="ERSOU ROCU: supervisor")
        ],
        history=[
            epb.EntityChange(
                change_id="C1", kind=epb.CHANGE_KIND_MERGED, entities=["entities/E9"], reason="same PNC"
            ),
            # Records split out of E1 into E5: they are no longer E1's, so the entry names none.
            epb.EntityChange(
                change_id="C2", kind=epb.CHANGE_KIND_SPLIT, entities=["entities/E5"], reason="twin"
            ),
            epb.EntityChange(
                change_id="C3", kind=epb.CHANGE_KIND_SPLIT, entities=["entities/E6"], reason="x", undone=True
            ),
        ],
        relations=[
            epb.Relation(
                kind=epb.RELATION_KIND_USES_PHONE,
                subject=name,
                target="entities/P1",
                source_system="niche",
                source_record_id="N1",
                grading=GRADING,
                region="regions/EMSOU",
            )
        ],
    )


class FakeEntity:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, str]]] = []
        self.refuse: dict[str, RpcError] = {}

    def _take(self, method: str, request: Any, metadata: Any) -> None:
        self.calls.append((method, request, dict(metadata)))
        if method in self.refuse:
            raise self.refuse[method]

    async def GetEntity(self, request: Any, metadata: Any, timeout: float) -> epb.GetEntityResponse:
        self._take("GetEntity", request, metadata)
        if request.name == "entities/HIDDEN":
            raise RpcError(grpc.StatusCode.NOT_FOUND, "entity entities/HIDDEN not found")
        answer = epb.GetEntityResponse(entity=an_entity())
        if request.name == "entities/OLD":  # merged into E1
            answer.entity.requested_name = request.name
        return answer

    async def SearchEntities(self, request: Any, metadata: Any, timeout: float) -> epb.SearchEntitiesResponse:
        self._take("SearchEntities", request, metadata)
        return epb.SearchEntitiesResponse(matches=[epb.EntityMatch(entity=an_entity(), score=0.9)])

    async def ExplainMatch(self, request: Any, metadata: Any, timeout: float) -> epb.ExplainMatchResponse:
        self._take("ExplainMatch", request, metadata)
        return epb.ExplainMatchResponse(explanation=EXPLANATION)

    async def MergeEntities(self, request: Any, metadata: Any, timeout: float) -> epb.MergeEntitiesResponse:
        self._take("MergeEntities", request, metadata)
        return epb.MergeEntitiesResponse(entity=an_entity(), change_id="C2")

    async def SplitEntity(self, request: Any, metadata: Any, timeout: float) -> epb.SplitEntityResponse:
        self._take("SplitEntity", request, metadata)
        return epb.SplitEntityResponse(entity=an_entity())

    async def ListReviewTasks(
        self, request: Any, metadata: Any, timeout: float
    ) -> epb.ListReviewTasksResponse:
        self._take("ListReviewTasks", request, metadata)
        return epb.ListReviewTasksResponse(
            review_tasks=[
                epb.ReviewTask(
                    name="regions/EMSOU/reviewTasks/T1",
                    record="regions/EMSOU/records/R2",
                    candidate_record="regions/EMSOU/records/R1",
                    entity="entities/E2",
                    candidate_entity="entities/E1",
                    explanation=EXPLANATION,
                    state=epb.REVIEW_STATE_OPEN,
                )
            ]
        )

    async def DecideReview(self, request: Any, metadata: Any, timeout: float) -> epb.DecideReviewResponse:
        self._take("DecideReview", request, metadata)
        return epb.DecideReviewResponse(
            review_task=epb.ReviewTask(name=request.name, state=epb.REVIEW_STATE_CONFIRMED),
            entity=an_entity(),
        )


def figures(region: int, raised: int) -> opb.RegionFigures:
    return opb.RegionFigures(
        region=region,
        jobs=opb.JobFigures(raised=raised, states=opb.JobStates(raised=raised), open=raised, overdue=1),
        pnd=opb.PndFigures(accepted=3, reconciliation=opb.PndReconciliation(in_sync=5, held=1)),
    )


class FakeOversight:
    def __init__(self) -> None:
        self.requests: list[opb.GetOverviewRequest] = []
        self.refuse: RpcError | None = None

    async def GetOverview(self, request: Any, metadata: Any, timeout: float) -> opb.GetOverviewResponse:
        self.requests.append(request)
        if self.refuse is not None:
            raise self.refuse
        regions = list(request.regions) or [region_pb2.REGION_EMSOU, region_pb2.REGION_ERSOU]
        rows = [figures(r, 4 if not request.force else 2) for r in regions]
        return opb.GetOverviewResponse(
            period=opb.Period(first_day=request.period.first_day or "2026-01-01", last_day="2026-12-04"),
            regions=rows,
            total=figures(0, sum(r.jobs.raised for r in rows)),
        )


class FakePnd:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.refuse: dict[str, RpcError] = {}
        self.report_regions = [region_pb2.REGION_EMSOU]

    def _take(self, method: str, request: Any) -> None:
        self.calls.append((method, request))
        if method in self.refuse:
            raise self.refuse[method]

    async def GetSyncStatus(self, request: Any, metadata: Any, timeout: float) -> ppb.GetSyncStatusResponse:
        self._take("GetSyncStatus", request)
        return ppb.GetSyncStatusResponse(
            queued=2,
            held=1,
            oldest_queued_age=Duration(seconds=7200),
            records=[ppb.StateCount(state=sync_pb2.SYNC_STATE_SYNCED, count=40)],
        )

    async def GetReconciliation(
        self, request: Any, metadata: Any, timeout: float
    ) -> ppb.GetReconciliationResponse:
        self._take("GetReconciliation", request)
        return ppb.GetReconciliationResponse(
            reconciliation=ppb.Reconciliation(
                name="reconciliations/RC1",
                regions=[
                    sync_pb2.RegionReconciliation(
                        region=region,
                        local_records=43,
                        in_sync=40,
                        missing=sync_pb2.AgedCount(
                            count=3, oldest_age=Duration(seconds=90000), older_than_day=1
                        ),
                    )
                    for region in self.report_regions
                ],
            )
        )

    async def ListReconciliationItems(
        self, request: Any, metadata: Any, timeout: float
    ) -> ppb.ListReconciliationItemsResponse:
        self._take("ListReconciliationItems", request)
        return ppb.ListReconciliationItemsResponse(
            items=[
                ppb.ReconciliationItem(
                    record="regions/EMSOU/intelligence/I7",
                    category=ppb.RECONCILIATION_CATEGORY_MISSING,
                    local_version=2,
                )
            ],
            next_page_token="MORE",
        )

    async def RunReconciliation(
        self, request: Any, metadata: Any, timeout: float
    ) -> ppb.RunReconciliationResponse:
        self._take("RunReconciliation", request)
        return ppb.RunReconciliationResponse()


@pytest.fixture
def console() -> tuple[TestClient, str, FakeEntity, FakeOversight, FakePnd]:
    app = create_app(Settings(), oidc=FakeOidc(), tasking=FakeTasking())  # type: ignore[arg-type]
    fakes = FakeEntity(), FakeOversight(), FakePnd()
    app.state.console._entity, app.state.console._oversight, app.state.console._pnd = fakes
    client = TestClient(app, base_url="http://127.0.0.1:8090")
    csrf = signed_in(client)
    client.post("/purpose", data={"purpose": "Op KESTREL", "csrf_token": csrf}, follow_redirects=False)
    return client, csrf, *fakes


def test_an_entity_page_shows_records_grading_relations_and_deconfliction(console) -> None:
    client, _, entity, *_ = console
    page = client.get("/entities/E1")
    assert page.status_code == 200
    method, request, metadata = entity.calls[-1]
    assert method == "GetEntity" and request.name == "entities/E1"
    assert metadata == {"authorization": "Bearer AT1", "x-toex-purpose": "Op KESTREL"}
    text = page.text
    assert "Daniel &lt;i&gt;SMITH&lt;/i&gt;" in text  # escaped, never markup
    assert ">2BP</abbr>" in text and "niche / N1" in text
    assert "uses phone (to)" in text and 'href="/entities/P1"' in text
    assert "ERSOU: ERSOU ROCU: supervisor" in text
    assert "Undo this merge" in text and 'value="C1"' in text
    assert "Undo this split" in text and 'value="C2"' in text and 'value="C3"' not in text
    assert "/entities/explain?record_a=regions/EMSOU/records/R1&amp;record_b=regions/EMSOU/records/R2" in text


def test_an_entity_out_of_scope_is_not_found_like_a_missing_one(console) -> None:
    client, *_ = console
    page = client.get("/entities/HIDDEN")
    assert page.status_code == 404 and "Not found" in page.text
    assert "entity entities/HIDDEN not found" not in page.text


def test_the_explanation_is_a_waterfall_without_inline_style(console) -> None:
    client, *_ = console
    page = client.get("/entities/explain?record_a=regions/EMSOU/records/R1&record_b=regions/EMSOU/records/R2")
    assert page.status_code == 200
    svg = page.text[page.text.index("<svg") : page.text.index("</svg>")]
    assert "style=" not in svg and "<script>" not in page.text
    assert "surname: +9.50" in svg and "birth date: -1.25" in svg and "Match weight: +0.25" in svg
    assert 'fill="#00703c"' in svg and 'fill="#d4351c"' in svg  # for and against
    assert "SMITH" in page.text and "probability 0.540" in page.text


def test_changes_need_the_csrf_token_and_send_the_reason(console) -> None:
    client, csrf, entity, *_ = console
    refused = client.post("/entities/E1", data={"action": "merge", "others": "E2", "reason": "same PNC"})
    assert refused.status_code == 403 and not any(c[0] == "MergeEntities" for c in entity.calls)
    done = client.post(
        "/entities/E1",
        data={
            "action": "merge",
            "others": "E2 entities/E3",
            "reason": " same  PNC ",
            "csrf_token": csrf,
            "request_id": "R",
        },
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == "/entities/E1"
    _, request, _ = next(c for c in entity.calls if c[0] == "MergeEntities")
    assert list(request.others) == ["entities/E2", "entities/E3"] and request.reason == "same PNC"
    client.post(
        "/entities/E1",
        data={
            "action": "split",
            "records": ["regions/EMSOU/records/R2"],
            "reason": "twin",
            "csrf_token": csrf,
        },
    )
    client.post(
        "/entities/E1", data={"action": "undo", "change_id": "C1", "reason": "wrong", "csrf_token": csrf}
    )
    splits = [c[1] for c in entity.calls if c[0] == "SplitEntity"]
    assert list(splits[0].records) == ["regions/EMSOU/records/R2"] and splits[1].undo_change == "C1"


def test_a_refused_merge_is_shown_with_the_entity_as_it_stands(console) -> None:
    client, csrf, entity, *_ = console
    entity.refuse["MergeEntities"] = RpcError(
        grpc.StatusCode.FAILED_PRECONDITION, "a reviewer rejected this pair: they are kept apart"
    )
    page = client.post(
        "/entities/E1", data={"action": "merge", "others": "E2", "reason": "x", "csrf_token": csrf}
    )
    assert page.status_code == 409
    assert "Refused: a reviewer rejected this pair" in page.text and "Records" in page.text


def test_the_review_queue_decides_with_a_reason_and_shows_refusals(console) -> None:
    client, csrf, entity, *_ = console
    queue = client.get("/entities/review")
    assert queue.status_code == 200 and "regions/EMSOU/reviewTasks/T1" in queue.text and "<svg" in queue.text
    assert (
        client.post(
            "/entities/review", data={"task": "regions/EMSOU/reviewTasks/T1", "decision": "confirm"}
        ).status_code
        == 403
    )
    done = client.post(
        "/entities/review",
        data={
            "task": "regions/EMSOU/reviewTasks/T1",
            "decision": "confirm",
            "reason": "same custody photo",
            "csrf_token": csrf,
            "request_id": "Q1",
        },
        follow_redirects=False,
    )
    assert done.status_code == 303 and "outcome=confirmed" in done.headers["location"]
    _, request, _ = next(c for c in entity.calls if c[0] == "DecideReview")
    assert request.decision == epb.REVIEW_DECISION_CONFIRM and request.reason == "same custody photo"
    assert request.request_id == "Q1"
    entity.refuse["DecideReview"] = RpcError(
        grpc.StatusCode.INVALID_ARGUMENT, "reason: a decision needs a reason"
    )
    page = client.post(
        "/entities/review",
        data={"task": "regions/EMSOU/reviewTasks/T1", "decision": "reject", "csrf_token": csrf},
    )
    assert page.status_code == 400 and "Not accepted: reason: a decision needs a reason" in page.text


def test_search_sends_the_criteria_and_links_the_entities(console) -> None:
    client, _, entity, *_ = console
    page = client.get("/entities?name=Daniel+Smith&phone_number=07700+900123")
    method, request, _ = entity.calls[-1]
    assert (
        method == "SearchEntities"
        and request.name == "Daniel Smith"
        and request.phone_number == "07700 900123"
    )
    assert 'href="/entities/E1"' in page.text and "0.90" in page.text


def test_the_national_overview_charts_regions_and_forces(console) -> None:
    client, _, _, oversight, _ = console
    page = client.get("/national?first_day=2026-11-01&last_day=2026-11-30")
    assert page.status_code == 200
    assert oversight.requests[-1].period.first_day == "2026-11-01" and not oversight.requests[-1].regions
    assert page.text.count("<svg") == 6 and "EMSOU" in page.text and "Choose a region" in page.text
    one = client.get("/national?region=EMSOU")
    # One region: its own figures and one call per force of the region (five in EMSOU).
    forces = [r.force for r in oversight.requests[-5:]]
    assert sorted(forces) == ["DERBYS", "LEICS", "LINCS", "NORTHANTS", "NOTTS"]
    assert "Per requesting force" in one.text and "Nottinghamshire Police" in one.text


def test_the_national_overview_refuses_with_what_to_do(console) -> None:
    client, _, _, oversight, _ = console
    bad = client.get("/national?first_day=30/11/2026")
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text and not oversight.requests
    oversight.refuse = RpcError(
        grpc.StatusCode.PERMISSION_DENIED, "the national overview is for the national team"
    )
    page = client.get("/national")
    assert page.status_code == 403
    assert "ask a national coordinator" in page.text and "Show what I may see" in page.text


def test_pnd_status_and_reconciliation_per_region(console) -> None:
    client, csrf, _, _, pnd = console
    page = client.get("/pnd?region=EMSOU&category=missing")
    assert page.status_code == 200
    calls = dict(pnd.calls)
    assert calls["GetSyncStatus"].name == "regions/EMSOU/syncStatus"
    listed = calls["ListReconciliationItems"]
    assert listed.parent == "reconciliations/RC1" and listed.region == "EMSOU"
    assert listed.category == ppb.RECONCILIATION_CATEGORY_MISSING
    assert "2 h 0 min" in page.text and "regions/EMSOU/intelligence/I7" in page.text
    assert "1 d 1 h" in page.text and "page_token=MORE" in page.text and "<svg" in page.text
    assert client.post("/pnd", data={}).status_code == 403
    assert client.post("/pnd", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303


def test_pnd_sections_show_the_services_refusal(console) -> None:
    client, csrf, _, _, pnd = console
    pnd.refuse["GetSyncStatus"] = RpcError(
        grpc.StatusCode.PERMISSION_DENIED, "method not allowed for role analyst"
    )
    pnd.refuse["RunReconciliation"] = RpcError(
        grpc.StatusCode.PERMISSION_DENIED, "method not allowed for role analyst"
    )
    page = client.get("/pnd")
    assert page.status_code == 200 and "The PND service refused: method not allowed" in page.text
    assert "Reconciliation per region" in page.text  # the other sections still answer
    run = client.post("/pnd", data={"csrf_token": csrf})
    assert run.status_code == 403 and "Only a region&#39;s supervisor or a national coordinator" in run.text


def test_charts_escape_labels_and_draw_an_empty_chart() -> None:
    svg = str(bars("Jobs <b>", [("A&B", [1, 2])], ["one", "two"]))
    assert "Jobs &lt;b&gt;" in svg and "A&amp;B" in svg and "style=" not in svg
    assert "Nothing to show." in str(bars("Empty", [], ["one"]))
    assert "Prior" in str(waterfall("W", -3.0, [Step("name", 4.0)]))


def test_a_merged_id_shows_the_entity_it_went_into_and_links_say_only_what_happened(console) -> None:
    client, *_ = console
    page = client.get("/entities/OLD")
    assert page.status_code == 200 and "entities/OLD was merged into this entity." in page.text
    assert 'action="/entities/E1"' in page.text  # changes go to the surviving entity
    assert "merged into this entity" not in client.get("/entities/E1").text
    crafted = client.get("/entities/review?decided=T1&outcome=approved+by+the+SIO&entity=x%22y")
    assert "approved by the SIO" not in crafted.text and "Open the entity" not in crafted.text


def test_a_region_installation_sends_people_to_the_hub_for_national_figures(console) -> None:
    client, _, _, oversight, _ = console
    oversight.refuse = RpcError(grpc.StatusCode.UNIMPLEMENTED, "")
    page = client.get("/national")
    assert page.status_code == 404 and "national hub" in page.text


def test_a_series_has_one_colour_in_its_bars_and_its_legend() -> None:
    svg = str(
        bars("Reconciliation", [("EMSOU", [5, 1])], ["in sync", "held"], colours=("#00703c", "#1d70b8"))
    )
    assert svg.count('fill="#00703c"') == 2 and svg.count('fill="#1d70b8"') == 2  # a bar and a key each


def test_pnd_shows_each_regions_queue_for_the_regions_the_report_names(console) -> None:
    client, _, _, _, pnd = console
    pnd.report_regions = [region_pb2.REGION_EMSOU, region_pb2.REGION_ERSOU]
    page = client.get("/pnd")
    asked = sorted(r.name for m, r in pnd.calls if m == "GetSyncStatus")
    assert asked == ["regions/-/syncStatus", "regions/EMSOU/syncStatus", "regions/ERSOU/syncStatus"]
    assert "Sync status per region" in page.text
    pnd.calls.clear()
    client.get("/pnd?region=EMSOU")  # one region: its own queue only
    assert [r.name for m, r in pnd.calls if m == "GetSyncStatus"] == ["regions/EMSOU/syncStatus"]


def test_a_split_is_undone_at_the_entity_it_split_from_either_page() -> None:
    split = epb.EntityChange(change_id="S1", kind=epb.CHANGE_KIND_SPLIT, entities=["entities/E5"])
    assert _undo(split, "entities/E1") == {"undo": "split", "undo_at": "entities/E1"}
    # On the page of the entity split off, the entry names the records it took and the entity
    # they came from: the undo is asked of that one.
    took = epb.EntityChange(
        change_id="S1",
        kind=epb.CHANGE_KIND_SPLIT,
        entities=["entities/E1"],
        records=["regions/EMSOU/records/R2"],
    )
    assert _undo(took, "entities/E5") == {"undo": "split", "undo_at": "entities/E1"}
    # Under a grant the entry names no entity: nothing to offer from that side.
    hidden = epb.EntityChange(
        change_id="S1", kind=epb.CHANGE_KIND_SPLIT, records=["regions/EMSOU/records/R2"]
    )
    assert _undo(hidden, "entities/E5")["undo"] == ""
    merged = epb.EntityChange(change_id="M1", kind=epb.CHANGE_KIND_MERGED, entities=["entities/E9"])
    assert _undo(merged, "entities/E1") == {"undo": "merge", "undo_at": "entities/E1"}
    for kind in (epb.CHANGE_KIND_CREATED, epb.CHANGE_KIND_MERGE_UNDONE, epb.CHANGE_KIND_SPLIT_UNDONE):
        assert _undo(epb.EntityChange(change_id="X", kind=kind), "entities/E1")["undo"] == ""


def test_the_undo_of_a_split_posts_to_the_entity_split(console) -> None:
    client, csrf, entity, *_ = console
    page = client.get("/entities/E1").text
    form = page[page.index('value="C2"') - 400 : page.index('value="C2"')]
    assert 'action="/entities/E1"' in form
    done = client.post(
        "/entities/E1",
        data={"action": "undo", "change_id": "C2", "reason": "same person", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert done.status_code == 303
    request = [c[1] for c in entity.calls if c[0] == "SplitEntity"][-1]
    assert request.name == "entities/E1" and request.undo_change == "C2" and request.reason == "same person"
