"""The comms pages in a real Chromium: researcher.emsou signs in, uploads the demo CDR (the file
the local stack's comms service writes) to a job, sees the upload's progress and the dataset it
made, enters the targets and sees the ranked suspects and the network chart drawn; no
Content-Security-Policy violation and no serious accessibility violation on the new pages."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest
from playwright.async_api import Route, async_playwright
from toex_comms.demo import DEMO_TARGETS

from .test_browser import chromium, no_serious_violations, serve_console, shot, sign_in  # noqa: F401
from .test_comms import comms_addr, demo  # noqa: F401
from .test_sign_in_and_jobs import NC, job

pytestmark = pytest.mark.integration


@pytest.fixture
def live_console_comms(keycloak, tasking_addr: str, comms_addr: str) -> Iterator[str]:  # type: ignore[no-untyped-def]  # noqa: F811
    yield from serve_console(keycloak, tasking_addr=tasking_addr, comms_addr=comms_addr)


async def test_upload_the_demo_cdr_and_see_the_ranked_suspects(
    chromium,  # noqa: F811
    live_console_comms,
    tasking_stub,
    tokens,
    demo,  # noqa: F811
) -> None:  # type: ignore[no-untyped-def]
    console = live_console_comms
    nc = [("authorization", f"Bearer {tokens[NC]}"), ("x-toex-purpose", "Op SETUP")]
    name = (await tasking_stub.CreateJob(job("EMSOU", "Op KESTREL"), metadata=nc)).job.name
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = await browser.new_page()
        policy_errors: list[str] = []
        page.on(
            "console",
            lambda msg: policy_errors.append(msg.text) if "Content Security Policy" in msg.text else None,
        )
        await sign_in(page, console, "researcher.emsou", "Op KESTREL")
        await page.goto(f"{console}/{name}")
        await page.get_by_role("link", name="Comms: upload call data").click()
        await page.wait_for_url(f"{console}/{name}/comms")
        await no_serious_violations(page)

        # Hold the upload at the console until the page has shown its progress: the demo file
        # is small enough to finish before anyone could look.
        release = asyncio.Event()
        sent_forms: list[bytes] = []

        async def hold(route: Route) -> None:
            sent_forms.append(route.request.post_data_buffer or b"")
            await release.wait()
            await route.continue_()

        await page.route("**/comms/upload", hold)
        await page.set_input_files("#file", str(demo / "cdr.csv"))
        await page.get_by_role("button", name="Upload").click()
        status = page.locator("#upload-status")
        await status.wait_for()
        assert (await status.inner_text()).startswith(("Uploading cdr.csv", "Uploaded cdr.csv"))
        assert await page.locator("#upload-progress").is_visible()
        assert await page.get_by_role("button", name="Upload").is_disabled()
        release.set()
        await page.wait_for_url(f"{console}/regions/EMSOU/datasets/**")
        await page.unroute("**/comms/upload")
        done = await page.get_by_role("status").inner_text()
        assert done == "Imported: 21 of 21 rows stored."
        assert "No row was rejected." in await page.content()
        await no_serious_violations(page)
        # The page named its upload; the console tells this session (and only a signed-in one)
        # that the service read every byte and imported it.
        upload_id = re.search(rb'name="upload_id"\r\n\r\n([0-9a-f]{32})\r\n', sent_forms[0])
        assert upload_id is not None
        progress = f"{console}/{name}/comms/uploads/{upload_id.group(1).decode()}"
        size = (demo / "cdr.csv").stat().st_size
        assert await (await page.request.get(progress)).json() == {
            "phase": "done",
            "sent": size,
            "total": size,
        }
        stranger = await playwright.request.new_context()
        assert (await stranger.get(progress)).status == 401
        await stranger.dispose()

        await page.get_by_role("link", name="Back to the job's comms").click()
        await page.wait_for_url(f"{console}/{name}/comms")
        await page.fill("#targets", "\n".join(DEMO_TARGETS))
        await page.get_by_role("button", name="Analyse").click()
        await page.wait_for_url(f"{console}/{name}/comms#results")
        suspects = page.get_by_role("table", name="Ranked suspects")
        first = await suspects.locator("tbody tr").first.inner_text()
        assert "+447700900100" in first and "in contact with 3 of 5 targets" in first
        await page.locator("#network[data-drawn]").wait_for(state="attached")
        assert int(await page.locator("#network").get_attribute("data-drawn") or 0) >= 8
        assert "numbers and" in await page.locator("#network-status").inner_text()
        await no_serious_violations(page)
        await shot(page, "comms")
        assert not policy_errors, policy_errors
        await browser.close()
