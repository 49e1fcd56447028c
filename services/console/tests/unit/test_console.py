"""The console's own rules with a fake identity provider and a fake tasking service: security
headers, CSRF, the purpose picker, the callback's state check, refresh, inactivity timeout."""

from __future__ import annotations

import re
import time
from typing import Any

import grpc
import pytest
from starlette.testclient import TestClient
from toex.safeguarding.v1 import safeguarding_pb2 as sg
from toex.tasking.v1 import tasking_pb2 as pb
from toex_console.app import create_app
from toex_console.config import Settings
from toex_console.oidc import Authorisation, SignInFailed
from toex_console.sessions import COOKIE_NAME, SessionStore


class FakeOidc:
    def __init__(self) -> None:
        self.refreshed = 0
        self.ended: list[dict[str, Any]] = []
        self.expires_in = 300.0

    async def authorise(self) -> Authorisation:
        return Authorisation(url="http://idp.test/auth?state=S1", state="S1", verifier="V1", nonce="N1")

    async def exchange(self, code: str, verifier: str, nonce: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if code != "good" or verifier != "V1" or nonce != "N1":
            raise SignInFailed("the identity provider refused the sign-in")
        tokens = {"access_token": "AT1", "refresh_token": "RT1", "expires_at": time.time() + self.expires_in}
        return tokens, {"preferred_username": "researcher.emsou"}

    async def refresh(self, tokens: dict[str, Any]) -> dict[str, Any]:
        self.refreshed += 1
        return {"access_token": f"AT{self.refreshed + 1}", "expires_at": time.time() + 300}

    async def end_session(self, tokens: dict[str, Any]) -> None:
        self.ended.append(tokens)


class FakeTasking:
    def __init__(self) -> None:
        self.calls: list[tuple[pb.ListJobsRequest, dict[str, str]]] = []

    async def ListJobs(
        self, request: pb.ListJobsRequest, metadata: Any, timeout: float
    ) -> pb.ListJobsResponse:
        self.calls.append((request, dict(metadata)))
        return pb.ListJobsResponse(
            jobs=[
                pb.Job(
                    name="regions/EMSOU/jobs/J1",
                    operation_name="Op <b>KESTREL</b>",
                    state=pb.JOB_STATE_RAISED,
                )
            ],
            next_page_token="NEXT",
        )


class RpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class HiddenJobs(FakeTasking):
    async def GetJob(self, request: pb.GetJobRequest, metadata: Any, timeout: float) -> pb.GetJobResponse:
        raise RpcError(grpc.StatusCode.NOT_FOUND, f"job {request.name} not found")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def parts() -> tuple[TestClient, FakeOidc, FakeTasking, Clock]:
    oidc, tasking, clock = FakeOidc(), FakeTasking(), Clock()
    settings = Settings(session_idle_seconds=600)
    app = create_app(settings, oidc=oidc, sessions=SessionStore(600, clock=clock), tasking=tasking)  # type: ignore[arg-type]
    return TestClient(app, base_url="http://127.0.0.1:8090"), oidc, tasking, clock


def signed_in(client: TestClient) -> str:
    client.get("/auth/login", follow_redirects=False)
    done = client.get("/auth/callback?state=S1&code=good", follow_redirects=False)
    assert done.status_code == 303
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)


def test_every_page_carries_a_strict_policy_and_the_cookie_is_opaque(parts) -> None:
    client, *_ = parts
    page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert (
        "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    )
    assert 'src="/static/console.js"' in page.text and "<script>" not in page.text
    login = client.get("/auth/login", follow_redirects=False)
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert client.get("/static/console.css").status_code == 200


def test_callback_with_another_state_or_a_refused_code_does_not_sign_in(parts) -> None:
    client, *_ = parts
    client.get("/auth/login", follow_redirects=False)
    assert client.get("/auth/callback?state=OTHER&code=good").status_code == 400
    refused = client.get("/auth/callback?state=S1&code=bad")
    assert refused.status_code == 400 and "Sign in again" in refused.text
    assert client.get("/jobs", follow_redirects=False).status_code == 303


def test_sign_in_rotates_the_session_id(parts) -> None:
    client, *_ = parts
    client.get("/auth/login", follow_redirects=False)
    before = client.cookies.get(COOKIE_NAME)
    client.get("/auth/callback?state=S1&code=good", follow_redirects=False)
    assert client.cookies.get(COOKIE_NAME) not in (None, before)


def test_reads_carry_the_token_and_the_chosen_purpose(parts) -> None:
    client, _, tasking, _ = parts
    csrf = signed_in(client)
    assert "Choose the operation or job" in client.get("/jobs").text and not tasking.calls
    assert client.post("/purpose", data={"purpose": "Op KESTREL"}).status_code == 403
    client.post("/purpose", data={"purpose": "  Op   KESTREL ", "csrf_token": csrf, "next": "/jobs"})
    board = client.get("/jobs?state=JOB_STATE_RAISED")
    request, metadata = tasking.calls[-1]
    assert metadata == {"authorization": "Bearer AT1", "x-toex-purpose": "Op KESTREL"}
    assert list(request.states) == [pb.JOB_STATE_RAISED]
    assert "Op &lt;b&gt;KESTREL&lt;/b&gt;" in board.text  # escaped, never markup
    assert "page_token=NEXT" in board.text


def test_a_purpose_that_cannot_travel_is_refused_with_advice(parts) -> None:
    client, *_ = parts
    csrf = signed_in(client)
    answer = client.post("/purpose", data={"purpose": "Op K\u00e9strel", "csrf_token": csrf})
    assert answer.status_code == 400 and "plain letters" in answer.text


def test_purpose_form_never_redirects_off_site(parts) -> None:
    client, *_ = parts
    csrf = signed_in(client)
    answer = client.post(
        "/purpose",
        data={"purpose": "Op K", "csrf_token": csrf, "next": "//evil.test/"},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/"


def test_an_expiring_token_is_refreshed_before_the_call(parts) -> None:
    client, oidc, tasking, _ = parts
    oidc.expires_in = 5  # inside the refresh margin
    csrf = signed_in(client)
    client.post("/purpose", data={"purpose": "Op K", "csrf_token": csrf})
    client.get("/jobs")
    assert oidc.refreshed == 1 and tasking.calls[-1][1]["authorization"] == "Bearer AT2"


def test_an_idle_session_ends(parts) -> None:
    client, _, _, clock = parts
    signed_in(client)
    clock.now += 599
    assert client.get("/jobs", follow_redirects=False).status_code == 200
    clock.now += 601
    assert client.get("/jobs", follow_redirects=False).status_code == 303


def test_sign_out_needs_the_csrf_token_and_ends_the_provider_session(parts) -> None:
    client, oidc, *_ = parts
    csrf = signed_in(client)
    assert client.post("/auth/logout", data={}).status_code == 403 and not oidc.ended
    out = client.post("/auth/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.headers["location"] == "/signed-out" and oidc.ended[0]["refresh_token"] == "RT1"
    assert client.get("/jobs", follow_redirects=False).status_code == 303


def test_a_job_out_of_scope_shows_not_found_without_echoing_the_reason() -> None:
    app = create_app(Settings(), oidc=FakeOidc(), tasking=HiddenJobs())  # type: ignore[arg-type]
    client = TestClient(app, base_url="http://127.0.0.1:8090")
    csrf = signed_in(client)
    client.post("/purpose", data={"purpose": "Op K", "csrf_token": csrf})
    page = client.get("/regions/ERSOU/jobs/J9")
    assert page.status_code == 404 and "Not found" in page.text and "find it from the jobs board" in page.text
    assert "job regions/ERSOU/jobs/J9 not found" not in page.text


def test_a_note_needs_the_csrf_token(parts) -> None:
    client, *_ = parts
    csrf = signed_in(client)
    client.post("/purpose", data={"purpose": "Op K", "csrf_token": csrf})
    assert client.post("/regions/EMSOU/jobs/J1", data={"text": "x"}).status_code == 403


class FakeSafeguarding:
    """Approval as the service rules it: the person who submitted may not approve."""

    def __init__(self) -> None:
        self.referral = sg.Referral(
            name="regions/EMSOU/referrals/R1",
            region=2,
            state=sg.REFERRAL_STATE_AWAITING_APPROVAL,
            concerns=[sg.CONCERN_MODERN_SLAVERY],
            destinations=[sg.DESTINATION_DUTY_TO_NOTIFY],
            subject=sg.Subject(entity_id="E-SECRET", date_of_birth="1990-01-01", local_authority="Leicester"),
            duty_to_notify=sg.DutyToNotify(reference="MS1-7", concerns=[sg.CONCERN_MODERN_SLAVERY]),
            submitted_for_approval_by="researcher.emsou",
            created_by="researcher.emsou",
        )
        self.calls: list[Any] = []

    async def ListReferrals(self, request: Any, metadata: Any, timeout: float) -> Any:
        self.calls.append(request)
        late = sg.Referral(name="regions/EMSOU/referrals/R2", overdue=True)
        late.clocks.add(kind=sg.CLOCK_KIND_LOCAL_AUTHORITY_DECISION, overdue=True).due_time.FromSeconds(10)
        return sg.ListReferralsResponse(referrals=[self.referral, late], next_page_token="N2")

    async def GetReferral(self, request: Any, metadata: Any, timeout: float) -> Any:
        return sg.GetReferralResponse(referral=self.referral)

    async def ApproveReferral(self, request: Any, metadata: Any, timeout: float) -> Any:
        self.calls.append(request)
        raise RpcError(
            grpc.StatusCode.PERMISSION_DENIED,
            "a referral is approved by a supervisor other than the officer who sent it",
        )


@pytest.fixture
def referrals() -> tuple[TestClient, FakeSafeguarding]:
    safeguarding = FakeSafeguarding()
    app = create_app(Settings(), oidc=FakeOidc(), tasking=FakeTasking(), safeguarding=safeguarding)  # type: ignore[arg-type]
    client = TestClient(app, base_url="http://127.0.0.1:8090")
    csrf = signed_in(client)
    client.post("/purpose", data={"purpose": "Op K", "csrf_token": csrf})
    return client, safeguarding


def test_referrals_list_overdue_first_with_paging(referrals) -> None:
    client, safeguarding = referrals
    page = client.get("/referrals?overdue=1&state=REFERRAL_STATE_AWAITING_APPROVAL")
    assert page.status_code == 200
    assert page.text.index("referrals/R2") < page.text.index("referrals/R1")
    assert safeguarding.calls[-1].overdue_only and list(safeguarding.calls[-1].states) == [
        sg.REFERRAL_STATE_AWAITING_APPROVAL
    ]
    assert "page_token=N2" in page.text and "overdue=1" in page.text


def test_ms1_route_shows_no_identifying_details(referrals) -> None:
    client, _ = referrals
    page = client.get("/regions/EMSOU/referrals/R1")
    assert page.status_code == 200 and "MS1-7" in page.text
    for secret in ("E-SECRET", "1990-01-01", "Leicester"):
        assert secret not in page.text


def test_the_service_refusing_the_approver_is_shown_and_forms_need_csrf(referrals) -> None:
    client, safeguarding = referrals
    page = client.get("/regions/EMSOU/referrals/R1")
    assert "a second person must approve it" in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert client.post("/regions/EMSOU/referrals/R1", data={"action": "approve"}).status_code == 403
    assert not any(isinstance(c, sg.ApproveReferralRequest) for c in safeguarding.calls)
    refused = client.post(
        "/regions/EMSOU/referrals/R1", data={"action": "approve", "csrf_token": csrf, "request_id": "Q1"}
    )
    assert (
        refused.status_code == 403 and "Refused: a referral is approved by a supervisor other" in refused.text
    )
    assert safeguarding.calls[-1] == sg.ApproveReferralRequest(
        name="regions/EMSOU/referrals/R1", request_id="Q1"
    )
    unknown = client.post("/regions/EMSOU/referrals/R1", data={"action": "delete", "csrf_token": csrf})
    assert unknown.status_code == 400


def test_recording_a_submission_needs_a_route_from_the_list(referrals) -> None:
    client, safeguarding = referrals
    page = client.get("/regions/EMSOU/referrals/R1")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    answer = client.post(
        "/regions/EMSOU/referrals/R1",
        data={"action": "record_submission", "destination": "DESTINATION_MOON", "csrf_token": csrf},
    )
    assert answer.status_code == 400 and "Choose the agency" in answer.text
    assert not any(isinstance(c, sg.RecordSubmissionRequest) for c in safeguarding.calls)


class FeedbackTasking(FakeTasking):
    def __init__(self) -> None:
        super().__init__()
        self.feedback: list[tuple[Any, Any]] = []

    async def RecordFeedback(self, request: Any, timeout: float, metadata: Any = None) -> Any:
        self.feedback.append((request, metadata))
        if request.token != "T1":
            raise RpcError(grpc.StatusCode.PERMISSION_DENIED, "the feedback token is not valid for this job")
        return pb.RecordFeedbackResponse(name=request.name)


def test_officer_feedback_needs_no_account_and_sends_no_credentials() -> None:
    tasking = FeedbackTasking()
    app = create_app(Settings(), oidc=FakeOidc(), tasking=tasking)  # type: ignore[arg-type]
    client = TestClient(app, base_url="http://127.0.0.1:8090")
    path = "/feedback/regions/EMSOU/jobs/J1"
    form = client.get(f"{path}?token=T1")
    assert form.status_code == 200 and 'name="token" value="T1"' in form.text
    missing = client.post(path, data={"token": "T1", "rating": "9"})
    assert missing.status_code == 400 and "Choose a rating" in missing.text and not tasking.feedback
    refused = client.post(path, data={"token": "T2", "rating": "3", "comment": "kept <b>"})
    assert refused.status_code == 403 and "ask the team that did the job for a new link" in refused.text
    assert "kept &lt;b&gt;" in refused.text  # what they wrote is kept, escaped
    done = client.post(path, data={"token": "T1", "rating": "4", "officer_name": " DS  Example "})
    assert done.status_code == 200 and "Thank you" in done.text
    request, metadata = tasking.feedback[-1]
    assert metadata is None and request == pb.RecordFeedbackRequest(
        name="regions/EMSOU/jobs/J1", rating=4, officer_name="DS Example", token="T1"
    )
