"""The console in a real Chromium (Debian's, driven by Playwright): sign in through the real
Keycloak login page, the purpose picker, the jobs board against a real tasking service, sign out;
no Content-Security-Policy violation and no serious accessibility violation (axe-core) on any
page. Skipped only where chromium is not installed locally; in CI (CI=true) that is a failure."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import uvicorn
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page, async_playwright
from toex.safeguarding.v1 import safeguarding_pb2 as sg_pb
from toex.safeguarding.v1 import safeguarding_pb2_grpc
from toex.tasking.v1 import tasking_pb2 as tasking_pb
from toex_console.app import create_app
from toex_console.config import Settings
from toex_devstack.keycloak import DEMO_PASSWORD

from .conftest import ensure_console_client
from .test_sign_in_and_jobs import NC, job

pytestmark = pytest.mark.integration

SERIOUS = {"serious", "critical"}
OFFICER, SUPERVISOR = "safeguarding_officer.emsou", "supervisor.emsou"
SCREENSHOTS = os.environ.get("TOEX_CONSOLE_SCREENSHOTS", "")


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed (.ci/run installs it): the console's browser tests need it")
    pytest.skip("chromium is not installed: apt-get install -y --no-install-recommends chromium")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_console(keycloak, **addresses: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    secret = ensure_console_client(keycloak, extra_redirect=f"{url}/auth/callback")
    settings = Settings(
        oidc_issuer=keycloak.issuer, console_client_secret=secret, public_url=url, **addresses
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def live_console(keycloak, tasking_addr: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    yield from serve_console(keycloak, tasking_addr=tasking_addr)


@pytest.fixture
def live_console_sg(keycloak, tasking_addr: str, safeguarding_addr: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    yield from serve_console(keycloak, tasking_addr=tasking_addr, safeguarding_addr=safeguarding_addr)


async def no_serious_violations(page: Page) -> None:
    results = await Axe().run(page)
    serious = [v for v in results.response["violations"] if v.get("impact") in SERIOUS]
    assert not serious, [(v["id"], v["help"], [n["target"] for n in v["nodes"]]) for v in serious]


async def shot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"console-{name}.png"), full_page=True)


async def test_sign_in_see_own_region_jobs_sign_out(chromium, live_console, tasking_stub, tokens) -> None:
    nc = [("authorization", f"Bearer {tokens[NC]}"), ("x-toex-purpose", "Op SETUP")]
    emsou_op, ersou_op = f"Op E{uuid.uuid4().hex[:6].upper()}", f"Op R{uuid.uuid4().hex[:6].upper()}"
    emsou_job = (await tasking_stub.CreateJob(job("EMSOU", emsou_op), metadata=nc)).job
    await tasking_stub.CreateJob(job("ERSOU", ersou_op), metadata=nc)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = await browser.new_page()
        policy_errors: list[str] = []
        page.on(
            "console",
            lambda msg: policy_errors.append(msg.text) if "Content Security Policy" in msg.text else None,
        )

        await page.goto(live_console)
        await no_serious_violations(page)
        await shot(page, "welcome")
        await page.get_by_role("link", name="Sign in").click()
        await page.fill("#username", "researcher.emsou")
        await page.fill("#password", DEMO_PASSWORD)
        await page.click("#kc-login")
        await page.wait_for_url(f"{live_console}/")
        assert await page.locator(".who").inner_text() == "researcher.emsou"
        await no_serious_violations(page)
        await shot(page, "home")

        await page.goto(f"{live_console}/jobs")
        assert "Choose the operation or job" in await page.content()
        await page.fill("#purpose", "Op KESTREL")
        await page.get_by_role("button", name="Use").click()
        await page.wait_for_url(f"{live_console}/jobs")
        board = await page.content()
        assert emsou_op in board and ersou_op not in board
        await no_serious_violations(page)
        await shot(page, "jobs")

        await page.get_by_role("link", name=emsou_job.name).click()
        await page.wait_for_url(f"{live_console}/{emsou_job.name}")
        await page.fill("#note", "Handset list checked")
        await page.get_by_role("button", name="Add note").click()
        await page.wait_for_url(f"{live_console}/{emsou_job.name}")
        assert "Handset list checked" in await page.content()
        await no_serious_violations(page)
        await shot(page, "job")

        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url(f"{live_console}/signed-out")
        await no_serious_violations(page)
        await page.goto(f"{live_console}/jobs")
        # The session is gone here and at Keycloak: the board sends the browser to sign in again.
        assert "/protocol/openid-connect/auth" in page.url
        assert await page.locator("#username").count() == 1
        assert not policy_errors, policy_errors
        await browser.close()


async def sign_in(page: Page, console: str, username: str, purpose: str) -> None:
    await page.goto(f"{console}/auth/login")
    await page.fill("#username", username)
    await page.fill("#password", DEMO_PASSWORD)
    await page.click("#kc-login")
    await page.wait_for_url(f"{console}/")
    await page.fill("#purpose", purpose)
    await page.get_by_role("button", name="Use").click()
    await page.wait_for_url(f"{console}/")


async def test_a_referral_is_approved_by_a_second_person(
    chromium, live_console_sg, safeguarding_addr, tokens
) -> None:  # type: ignore[no-untyped-def]
    officer_md = [("authorization", f"Bearer {tokens[OFFICER]}"), ("x-toex-purpose", "Op SANDPIPER")]
    async with grpc.aio.insecure_channel(safeguarding_addr) as ch:
        created = (
            await safeguarding_pb2_grpc.SafeguardingServiceStub(ch).CreateReferral(
                sg_pb.CreateReferralRequest(
                    parent="regions/EMSOU",
                    referral=sg_pb.Referral(
                        subject=sg_pb.Subject(
                            entity_id=f"ent-{uuid.uuid4().hex[:8]}",
                            age_band=sg_pb.AGE_BAND_CHILD,
                            local_authority="Derby",
                        ),
                        concerns=[sg_pb.CONCERN_CHILD_CRIMINAL_EXPLOITATION],
                    ),
                ),
                metadata=officer_md,
            )
        ).referral
    console = live_console_sg
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        policy_errors: list[str] = []
        for step, username in enumerate((OFFICER, SUPERVISOR)):
            context = await browser.new_context()
            page = await context.new_page()
            page.on(
                "console",
                lambda msg: policy_errors.append(msg.text) if "Content Security Policy" in msg.text else None,
            )
            await sign_in(page, console, username, "Op SANDPIPER")
            await page.get_by_role("link", name="Referrals").click()
            await page.wait_for_url(f"{console}/referrals")
            await no_serious_violations(page)
            if step == 0:
                await shot(page, "referrals")
            await page.get_by_role("link", name=created.name).click()
            await page.wait_for_url(f"{console}/{created.name}")
            if step == 0:
                # The officer sends it for approval, then tries to approve it: the service refuses.
                await page.get_by_role("button", name="Submit for approval").click()
                await page.wait_for_url(f"{console}/{created.name}")
                assert "awaiting approval" in await page.locator(".facts").first.inner_text()
                await page.get_by_role("button", name="Approve").click()
                await page.locator(".refusal").wait_for()
                refusal = await page.locator(".refusal").inner_text()
                assert refusal.startswith("Refused:") and "supervisor" in refusal
                assert "awaiting approval" in await page.locator(".facts").first.inner_text()
                await no_serious_violations(page)
                await shot(page, "referral-refused")
            else:
                await page.get_by_role("button", name="Approve").click()
                await page.wait_for_url(f"{console}/{created.name}")
                facts = await page.locator(".facts").first.inner_text()
                assert "approved" in facts and "supervisor.emsou" in facts
                await no_serious_violations(page)
                # Sent to children's social care: the statutory clock starts.
                await page.select_option("#route-record_submission", "DESTINATION_CHILDRENS_SOCIAL_CARE")
                await page.fill("#agency-record_submission", "DCC-123")
                await page.get_by_role("button", name="Record it as sent").click()
                await page.wait_for_url(f"{console}/{created.name}")
                clocks = await page.get_by_role("table", name="Statutory clocks").inner_text()
                assert "local authority decision" in clocks and "children's social care" in clocks
                await no_serious_violations(page)
                await shot(page, "referral")
            await context.close()
        # Another region's supervisor neither sees it in the list nor opens it by its address.
        context = await browser.new_context()
        page = await context.new_page()
        await sign_in(page, console, "supervisor.ersou", "Op SANDPIPER")
        await page.goto(f"{console}/referrals")
        assert await page.get_by_role("table", name="Referrals").count() == 1  # the list answered
        assert created.name not in await page.content()
        answer = await page.goto(f"{console}/{created.name}")
        assert answer is not None and answer.status == 404
        assert "Not found" in await page.content()
        await context.close()
        assert not policy_errors, policy_errors
        await browser.close()


async def test_the_officer_gives_feedback_by_the_one_time_link(
    chromium, live_console, tasking_stub, tokens
) -> None:  # type: ignore[no-untyped-def]
    def md(user: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {tokens[user]}"), ("x-toex-purpose", "Op LARCH")]

    researcher = "researcher.emsou"
    name = (await tasking_stub.CreateJob(job("EMSOU", "Op LARCH"), metadata=md(SUPERVISOR))).job.name
    await tasking_stub.AssignJob(
        tasking_pb.AssignJobRequest(name=name, assignees=[researcher]), metadata=md(SUPERVISOR)
    )
    await tasking_stub.UpdateJobStatus(
        tasking_pb.UpdateJobStatusRequest(name=name, state=tasking_pb.JOB_STATE_IN_PROGRESS),
        metadata=md(researcher),
    )
    delivered = await tasking_stub.UpdateJobStatus(
        tasking_pb.UpdateJobStatusRequest(
            name=name, state=tasking_pb.JOB_STATE_DELIVERED, product="Network chart"
        ),
        metadata=md(researcher),
    )
    link = f"{live_console}/feedback/{name}?token={delivered.feedback_token}"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = await browser.new_page()  # no sign-in: the officer has no account
        policy_errors: list[str] = []
        page.on(
            "console",
            lambda msg: policy_errors.append(msg.text) if "Content Security Policy" in msg.text else None,
        )
        await page.goto(f"{live_console}/feedback/{name}?token=not-the-token")
        await page.get_by_label("4").check()
        await page.get_by_role("button", name="Send feedback").click()
        await page.locator(".refusal").wait_for()
        assert "ask the team that did the job for a new link" in await page.locator(".refusal").inner_text()

        await page.goto(link)
        await no_serious_violations(page)
        await shot(page, "feedback")
        await page.get_by_label("4").check()
        await page.fill("#comment", "Identified two further suspects")
        await page.get_by_role("button", name="Send feedback").click()
        await page.get_by_role("heading", name="Thank you").wait_for()
        await no_serious_violations(page)

        await page.goto(link)  # the link works once
        await page.get_by_label("5").check()
        await page.get_by_role("button", name="Send feedback").click()
        await page.locator(".refusal").wait_for()
        assert "already" in await page.locator(".refusal").inner_text()
        assert not policy_errors, policy_errors
        await browser.close()
    read = await tasking_stub.GetJob(tasking_pb.GetJobRequest(name=name), metadata=md(SUPERVISOR))
    assert read.job.feedback.rating == 4 and read.job.feedback.comment == "Identified two further suspects"
