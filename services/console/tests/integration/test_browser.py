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

import httpx
import pytest
import uvicorn
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page, async_playwright
from toex_console.app import create_app
from toex_console.config import Settings
from toex_devstack.keycloak import DEMO_PASSWORD

from .conftest import ensure_console_client
from .test_sign_in_and_jobs import NC, job

pytestmark = pytest.mark.integration

SERIOUS = {"serious", "critical"}
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


@pytest.fixture
def live_console(keycloak, tasking_addr: str) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    secret = ensure_console_client(keycloak, extra_redirect=f"{url}/auth/callback")
    settings = Settings(
        oidc_issuer=keycloak.issuer, console_client_secret=secret, public_url=url, tasking_addr=tasking_addr
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
