"""Sign-in through the real Keycloak (authorisation code + PKCE, the login form filled in as a
person would), the console calling a real tasking service with the person's own token and
purpose, and sign-out ending the Keycloak session."""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from toex.tasking.v1 import tasking_pb2 as pb
from toex_console.sessions import COOKIE_NAME
from toex_devstack.keycloak import DEMO_PASSWORD

pytestmark = pytest.mark.integration

NC = "national_coordinator.national"


async def sign_in(console: httpx.AsyncClient, username: str) -> None:
    started = await console.get("/auth/login")
    assert started.status_code == 303
    authorise = started.headers["location"]
    query = parse_qs(urlparse(authorise).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(authorise, follow_redirects=True)
        action = html.unescape(
            re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page.text).group(1)
        )
        # Keycloak marks its cookies Secure; browsers send those to a loopback address over
        # plain HTTP (a secure context), httpx does not, so they go by hand.
        jar = "; ".join(f"{cookie.name}={cookie.value}" for cookie in browser.cookies.jar)
        answer = await browser.post(
            action, data={"username": username, "password": DEMO_PASSWORD}, headers={"Cookie": jar}
        )
    assert answer.status_code == 302, (
        re.findall(r"(?:kc-feedback-text|alert)[^>]*>([^<]+)", answer.text) or answer.text[-1500:]
    )
    back = urlparse(answer.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == "http://127.0.0.1:8090/auth/callback"
    done = await console.get(f"{back.path}?{back.query}")
    assert done.status_code == 303 and done.headers["location"] == "/"


def strip_csrf(page: str) -> str:
    """The page without its CSRF token and its own address (the purpose form returns to it)."""
    return re.sub(r'name="(csrf_token|next)" value="[^"]+"', "", page)


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def job(region: str, operation: str) -> pb.CreateJobRequest:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(days=3))
    return pb.CreateJobRequest(
        parent=f"regions/{region}",
        job=pb.Job(
            requesting_unit="Derbyshire Constabulary",
            requesting_officer="DS Example",
            operation_name=operation,
            job_type=pb.JOB_TYPE_COMMS_ANALYSIS,
            priority=pb.PRIORITY_URGENT,
            due_time=stamp,
            description="Phone number index",
        ),
    )


async def test_researcher_sees_own_region_jobs_only_with_a_purpose(console, tasking_stub, tokens) -> None:
    nc = [("authorization", f"Bearer {tokens[NC]}"), ("x-toex-purpose", "Op SETUP")]
    emsou_op, ersou_op = f"Op E{uuid.uuid4().hex[:6].upper()}", f"Op R{uuid.uuid4().hex[:6].upper()}"
    emsou_job = (await tasking_stub.CreateJob(job("EMSOU", emsou_op), metadata=nc)).job
    ersou_job = (await tasking_stub.CreateJob(job("ERSOU", ersou_op), metadata=nc)).job

    before = console.cookies.get(COOKIE_NAME)
    await sign_in(console, "researcher.emsou")
    assert console.cookies.get(COOKIE_NAME) not in (None, before)  # a new id at sign-in

    home = await console.get("/")
    assert "researcher.emsou" in home.text and "Sign out" in home.text
    assert "access_token" not in home.text and tokens["researcher.emsou"] not in home.text

    board = await console.get("/jobs")
    assert "Choose the operation or job" in board.text and emsou_op not in board.text

    refused = await console.post("/purpose", data={"purpose": "Op KESTREL", "csrf_token": "forged"})
    assert refused.status_code == 403
    chosen = await console.post(
        "/purpose", data={"purpose": "Op KESTREL", "csrf_token": csrf_of(board.text), "next": "/jobs"}
    )
    assert chosen.status_code == 303 and chosen.headers["location"] == "/jobs"

    board = await console.get("/jobs")
    assert emsou_op in board.text
    assert ersou_op not in board.text  # another region's job is not listed, nor hinted at

    # A job's page, and a note added from it (the note carries the person's name, from their token).
    page = await console.get(f"/{emsou_job.name}")
    assert page.status_code == 200 and emsou_op in page.text and "No notes yet." in page.text
    added = await console.post(
        f"/{emsou_job.name}",
        data={
            "text": "Checked the handset list",
            "csrf_token": csrf_of(page.text),
            "request_id": uuid.uuid4().hex,
        },
    )
    assert added.status_code == 303
    page = await console.get(f"/{emsou_job.name}")
    assert "Checked the handset list" in page.text and "researcher.emsou" in page.text

    # Another region's job looks exactly like one that does not exist.
    hidden = await console.get(f"/{ersou_job.name}")
    missing = await console.get(f"/regions/ERSOU/jobs/{uuid.uuid4().hex[:16]}")
    assert hidden.status_code == missing.status_code == 404
    assert ersou_op not in hidden.text
    assert strip_csrf(hidden.text) == strip_csrf(missing.text)


async def test_sign_out_ends_the_console_and_keycloak_sessions(console, keycloak) -> None:
    await sign_in(console, "researcher.emsou")
    home = await console.get("/")
    store = console.app.state.console.sessions
    session = store.get(console.cookies.get(COOKIE_NAME))
    refresh = session.tokens["refresh_token"]

    stale = await console.post("/auth/logout", data={"csrf_token": "forged"})
    assert stale.status_code == 403 and store.get(session.id) is not None

    out = await console.post("/auth/logout", data={"csrf_token": csrf_of(home.text)})
    assert out.status_code == 303 and out.headers["location"] == "/signed-out"
    assert store.get(session.id) is None
    again = await console.get("/jobs")
    assert again.status_code == 303 and again.headers["location"].startswith("/auth/login")

    # The Keycloak session is over too: its refresh token no longer works.
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(
            keycloak.token_endpoint,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "client_id": "toex-console",
                "client_secret": "toex-console-local-secret",
            },
        )
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
