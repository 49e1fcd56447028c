"""The entity, national overview and PND pages in a real Chromium against real services: the
entity service, the oversight service and the PND sync service (each its own PostgreSQL
database, the test's nats-server, the real Keycloak; the PND simulator as its own process).
A review task confirmed and its merge undone end to end; another region's researcher finds an
EMSOU entity exactly as missing; the national team's figures and a researcher refused with
what to do; the PND status and a reconciliation run by a supervisor. Each page is checked
with axe-core (no serious violation) and for Content-Security-Policy violations."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from playwright.async_api import Page, async_playwright
from toex.entity.v1 import entity_pb2 as epb
from toex.entity.v1 import entity_pb2_grpc
from toex.oversight.v1 import oversight_pb2 as opb
from toex.oversight.v1 import oversight_pb2_grpc
from toex.pnd.v1 import pnd_pb2 as ppb
from toex.pnd.v1 import pnd_pb2_grpc, pole_pb2
from toex.tasking.v1 import tasking_pb2 as tpb
from toex.type.v1 import force_pb2, region_pb2, security_pb2
from toex_common.migrations import upgrade
from toex_entity.__main__ import migrations_dir as entity_migrations
from toex_entity.bootstrap import build as build_entity
from toex_entity.config import Settings as EntitySettings
from toex_entity.domain.matching import Thresholds
from toex_entity.service_layer import handlers as entity_handlers
from toex_oversight.__main__ import migrations_dir as oversight_migrations
from toex_oversight.bootstrap import build as build_oversight
from toex_oversight.config import Settings as OversightSettings
from toex_pnd.__main__ import migrations_dir as pnd_migrations
from toex_pnd.bootstrap import build as build_pnd
from toex_pnd.config import Settings as PndSettings

from .test_browser import chromium, free_port, no_serious_violations, serve_console, shot, sign_in  # noqa: F401

pytestmark = pytest.mark.integration

ANALYST, NC = "analyst.emsou", "national_coordinator.national"
GRADING = epb.Grading(
    source_evaluation=epb.SOURCE_EVALUATION_2,
    intelligence_assessment=epb.INTELLIGENCE_ASSESSMENT_B,
    handling=security_pb2.HANDLING_CODE_P,
)


def md(tokens: Any, user: str, purpose: str = "Op HERON") -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {tokens[user]}"), ("x-toex-purpose", purpose)]


async def own_database(postgres: Any, prefix: str, migrations: Path) -> tuple[str, str]:
    name = f"t_console_{prefix}_{uuid.uuid4().hex[:10]}"
    url = postgres.create_database(name)
    await asyncio.to_thread(upgrade, url, migrations)
    return name, url


@pytest.fixture
async def entity_app(postgres: Any, nats_server: Any, keycloak: Any) -> AsyncIterator[Any]:
    """A real entity service on which every candidate pair above the review threshold is queued
    for a reviewer (nothing links by probability alone), so the queue has work."""
    name, url = await own_database(postgres, "entity", entity_migrations())
    app = await build_entity(
        EntitySettings(
            service_name=f"entity-{uuid.uuid4().hex[:8]}",
            database_url=url,
            nats_url=nats_server.url,
            oidc_issuer=keycloak.issuer,
            grpc_port=0,
            service_client_secret="toex-entity-local-secret",
            outbox_poll_seconds=0.2,
            consume=False,
            learning=False,
        )
    )
    await app.server.start()
    await app.start_background()
    async with app.deps.uow() as uow:
        model = await app.deps.models.current(uow)
    await entity_handlers.save_model(
        dataclasses.replace(model, thresholds=Thresholds(auto_link=1.01, review=0.5)), app.deps
    )
    yield app
    await app.server.stop(1)
    await app.shutdown()
    postgres.drop_database(name)


@pytest.fixture
async def oversight_addr(
    postgres: Any, nats_server: Any, keycloak: Any, tasking_addr: str
) -> AsyncIterator[str]:
    name, url = await own_database(postgres, "oversight", oversight_migrations())
    app = await build_oversight(
        OversightSettings(
            service_name=f"oversight-{uuid.uuid4().hex[:8]}",
            database_url=url,
            nats_url=nats_server.url,
            oidc_issuer=keycloak.issuer,
            grpc_port=0,
            outbox_poll_seconds=0.2,
        )
    )
    await app.server.start()
    await app.start_background()
    yield f"127.0.0.1:{app.port}"
    await app.server.stop(1)
    await app.shutdown()
    postgres.drop_database(name)


@pytest.fixture
def pnd_simulator() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="toex-console-pnd-sim-") as data:
        log = (Path(data) / "simulator.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "toex_pnd.simulator", "--port", str(port), "--data-dir", data],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        try:
            yield url
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()


@pytest.fixture
async def pnd_addr(postgres: Any, nats_server: Any, keycloak: Any, pnd_simulator: str) -> AsyncIterator[str]:
    name, url = await own_database(postgres, "pnd", pnd_migrations())
    app = await build_pnd(
        PndSettings(
            service_name=f"pnd-{uuid.uuid4().hex[:8]}",
            database_url=url,
            nats_url=nats_server.url,
            oidc_issuer=keycloak.issuer,
            grpc_port=0,
            pnd_url=pnd_simulator,
            dispatch_poll_seconds=0.1,
            retry_base_seconds=0.2,
            retry_cap_seconds=1.0,
            reconcile_interval_seconds=0,
            outbox_poll_seconds=0.2,
            consume=False,
        )
    )
    await app.server.start()
    await app.start_background()
    yield f"127.0.0.1:{app.port}"
    await app.server.stop(1)
    await app.shutdown()
    postgres.drop_database(name)


def person(source_id: str, given: str, surname: str, birth_date: str) -> epb.SourceRecord:
    return epb.SourceRecord(
        ref=epb.SourceRecordRef(source_system="niche", source_record_id=source_id),
        grading=GRADING,
        person=epb.Person(
            given_name=given,
            surname=surname,
            birth_date=birth_date,
            gender=epb.GENDER_MALE,
            addresses=[epb.Address(lines=["14 Mill Lane"], town="Derby", postcode="DE1 2AB")],
        ),
    )


def watch_policy(page: Page, errors: list[str]) -> None:
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)


@pytest.fixture
def entity_console(keycloak: Any, tasking_addr: str, entity_app: Any) -> Iterator[str]:
    yield from serve_console(keycloak, tasking_addr=tasking_addr, entity_addr=f"127.0.0.1:{entity_app.port}")


@pytest.fixture
def national_console(keycloak: Any, tasking_addr: str, oversight_addr: str, pnd_addr: str) -> Iterator[str]:
    yield from serve_console(
        keycloak, tasking_addr=tasking_addr, oversight_addr=oversight_addr, pnd_addr=pnd_addr
    )


async def test_review_confirm_undo_and_another_region_finds_nothing(
    chromium: str,  # noqa: F811
    entity_console: str,
    entity_app: Any,
    tokens: Any,
) -> None:
    surname = "Q" + uuid.uuid4().hex[:8].translate(str.maketrans("0123456789", "qwrtypsdfg")).capitalize()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{entity_app.port}") as ch:
        stub = entity_pb2_grpc.EntityResolutionServiceStub(ch)
        first = await stub.ResolveRecord(
            epb.ResolveRecordRequest(
                parent="regions/EMSOU", record=person(uuid.uuid4().hex, "Daniel", surname, "1984-03-12")
            ),
            metadata=md(tokens, ANALYST),
        )
        # The same man from another system, his day and month digits transposed: a review task.
        second = await stub.ResolveRecord(
            epb.ResolveRecordRequest(
                parent="regions/EMSOU", record=person(uuid.uuid4().hex, "Danny", surname, "1984-03-21")
            ),
            metadata=md(tokens, ANALYST),
        )
    assert second.outcome == epb.RESOLVE_OUTCOME_QUEUED_FOR_REVIEW, second
    [task] = second.review_tasks
    task_id = task.rsplit("/", 1)[-1]
    entity_id = first.entity.name.removeprefix("entities/")

    console_url = entity_console
    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = await browser.new_context()
        page = await context.new_page()
        watch_policy(page, errors)
        await sign_in(page, console_url, ANALYST, "Op HERON")

        await page.get_by_role("link", name="Entities").click()
        await page.fill("#name", f"Daniel {surname}")
        await page.get_by_role("button", name="Search").click()
        await page.get_by_role("table", name="Entities found").wait_for()
        assert surname.upper() in (await page.content()).upper()
        await no_serious_violations(page)
        await shot(page, "entities")

        await page.goto(f"{console_url}/entities/review")
        section = page.locator("section.task", has=page.get_by_role("heading", name=task))
        assert "review" in await section.locator(".facts").first.inner_text()
        assert await section.locator("svg.chart").count() == 1  # the waterfall
        await no_serious_violations(page)
        await shot(page, "review")
        # A decision without a reason is not sent (the field is required in the form).
        await section.locator(f"#reason-{task_id}").fill("Same custody photograph")
        await section.get_by_role("button", name="Confirm: the same").click()
        await page.wait_for_url(f"{console_url}/entities/review?**")
        assert f"Task {task_id} confirmed." in await page.locator(".done").inner_text()
        await page.get_by_role("link", name="Open the entity").click()
        await page.wait_for_url(f"{console_url}/entities/{entity_id}")
        records = page.get_by_role("table", name="Records")
        assert await records.locator("tbody tr").count() == 2
        assert "2BP" in await records.inner_text()
        history = await page.get_by_role("table", name="History").inner_text()
        assert "merged" in history and ANALYST in history and "Same custody photograph" in history
        await no_serious_violations(page)
        await shot(page, "entity")

        await page.locator("main p a[href^='/entities/explain']").first.click()
        await page.wait_for_url(f"{console_url}/entities/explain?**")
        assert await page.locator("figure.waterfall svg").count() == 1
        facts = await page.locator(".facts").inner_text()
        assert first.record.name in facts and second.record.name in facts and "probability" in facts
        comparisons = (
            await page.get_by_role("table", name=re.compile("^Match weights")).locator("tbody tr").count()
        )
        assert comparisons >= 3  # one bar per comparison of the model, each in the table too
        await no_serious_violations(page)
        await shot(page, "explain")

        # Undo the merge: the two entities come back, each with its own record.
        await page.go_back()
        undo = page.locator("form", has=page.get_by_role("button", name="Undo this merge"))
        await undo.locator("input[name=reason]").fill("Twins: confirmed by the custody sergeant")
        await undo.get_by_role("button", name="Undo this merge").click()
        await page.wait_for_url(f"{console_url}/entities/{entity_id}")
        assert await page.get_by_role("table", name="Records").locator("tbody tr").count() == 1
        assert "(undone)" in await page.get_by_role("table", name="History").inner_text()
        # The service's refusal is shown with the entity as it stands.
        await page.fill("#merge-others", entity_id)
        await page.fill("#merge-reason", "Same person")
        await page.get_by_role("button", name="Merge").click()
        await page.locator(".refusal").wait_for()
        assert "merged into itself" in await page.locator(".refusal").inner_text()
        assert await page.get_by_role("table", name="Records").locator("tbody tr").count() == 1

        # A split is undone from the entity's page too: two other people merged into one entity
        # (over gRPC), one record split out in the browser, then the split undone.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{entity_app.port}") as ch:
            stub = entity_pb2_grpc.EntityResolutionServiceStub(ch)
            kept, parted = [
                await stub.ResolveRecord(
                    epb.ResolveRecordRequest(
                        parent="regions/EMSOU", record=person(uuid.uuid4().hex, given, f"{surname}x", born)
                    ),
                    metadata=md(tokens, ANALYST),
                )
                for given, born in (("Alan", "1970-01-05"), ("Brian", "1991-11-30"))
            ]
            await stub.MergeEntities(
                epb.MergeEntitiesRequest(
                    name=kept.entity.name, others=[parted.entity.name], reason="Same man, two aliases"
                ),
                metadata=md(tokens, ANALYST),
            )
        await page.goto(f"{console_url}/{kept.entity.name}")
        assert await page.get_by_role("table", name="Records").locator("tbody tr").count() == 2
        await page.locator(f"input[name=records][value='{parted.record.name}']").check()
        await page.fill("#split-reason", "Different fathers named on the records")
        await page.get_by_role("button", name="Split", exact=True).click()
        await page.wait_for_url(f"{console_url}/{kept.entity.name}")
        assert await page.get_by_role("table", name="Records").locator("tbody tr").count() == 1
        undo = page.locator("form", has=page.get_by_role("button", name="Undo this split"))
        await undo.locator("input[name=reason]").fill("The fathers' names were a keying error")
        await undo.get_by_role("button", name="Undo this split").click()
        await page.wait_for_url(f"{console_url}/{kept.entity.name}")
        records_text = await page.get_by_role("table", name="Records").inner_text()
        assert parted.record.name in records_text and kept.record.name in records_text
        history = await page.get_by_role("table", name="History").inner_text()
        assert "split undone" in history and "(undone)" in history
        assert await page.get_by_role("button", name="Undo this split").count() == 0
        await no_serious_violations(page)
        await context.close()

        # Another region's researcher: the EMSOU entity is exactly as missing, search finds nothing.
        context = await browser.new_context()
        page = await context.new_page()
        watch_policy(page, errors)
        await sign_in(page, console_url, "researcher.ersou", "Op HERON")
        hidden = await page.goto(f"{console_url}/entities/{entity_id}")
        assert hidden is not None and hidden.status == 404
        hidden_text = await page.locator("main").inner_text()
        missing = await page.goto(f"{console_url}/entities/{uuid.uuid4().hex}")
        assert missing is not None and missing.status == 404
        assert hidden_text == await page.locator("main").inner_text()
        assert surname.upper() not in hidden_text.upper()
        await no_serious_violations(page)
        await page.goto(f"{console_url}/entities?name={surname}")
        found = await page.get_by_role("table", name="Entities found").inner_text()
        assert "Nothing found" in found and surname.upper() not in found.upper()
        await context.close()
        await browser.close()
    assert not errors, errors


async def test_national_overview_and_pnd_status(
    chromium: str,  # noqa: F811
    national_console: str,
    tasking_stub: Any,
    oversight_addr: str,
    pnd_addr: str,
    tokens: Any,
) -> None:
    due = Timestamp()
    due.FromDatetime(datetime.now(UTC) + timedelta(days=3))
    # Jobs asked for by forces of three regions (the last one's figures reached the hub: all did).
    for region, force, unit in (
        ("ERSOU", force_pb2.FORCE_ESSEX, "Essex Police"),
        ("ROCUWM", force_pb2.FORCE_WEST_MIDLANDS, "West Midlands Police"),
        ("EMSOU", force_pb2.FORCE_DERBYSHIRE, "Derbyshire Constabulary"),
        ("EMSOU", force_pb2.FORCE_NOTTINGHAMSHIRE, "Nottinghamshire Police"),
    ):
        created = await tasking_stub.CreateJob(
            tpb.CreateJobRequest(
                parent=f"regions/{region}",
                job=tpb.Job(
                    requesting_unit=unit,
                    requesting_officer="DS Example",
                    requesting_force=force,
                    operation_name="Op HERON",
                    job_type=tpb.JOB_TYPE_COMMS_ANALYSIS,
                    priority=tpb.PRIORITY_URGENT,
                    due_time=due,
                    description="Phone number index",
                ),
            ),
            metadata=md(tokens, NC),
        )
        assert created.job.name
    emsou = [region_pb2.REGION_EMSOU]
    async with grpc.aio.insecure_channel(oversight_addr) as ch:
        oversight = oversight_pb2_grpc.OversightServiceStub(ch)

        async def notts() -> int:
            answer = await oversight.GetOverview(
                opb.GetOverviewRequest(regions=emsou, force="NOTTS"), metadata=md(tokens, NC)
            )
            return int(answer.total.jobs.raised)

        deadline = time.monotonic() + 60
        while await notts() < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        assert await notts() >= 1
        expected = (
            await oversight.GetOverview(opb.GetOverviewRequest(regions=emsou), metadata=md(tokens, NC))
        ).total.jobs.raised

    async with grpc.aio.insecure_channel(pnd_addr) as ch:
        pnd = pnd_pb2_grpc.PndSyncServiceStub(ch)
        held = await pnd.SubmitIntelligence(
            ppb.SubmitIntelligenceRequest(
                parent="regions/EMSOU",
                record=ppb.IntelligenceRecord(
                    entity=pole_pb2.PoleEntity(phone=pole_pb2.Phone(e164="+447700900123")),
                    grading=pole_pb2.Grading(
                        source_evaluation=pole_pb2.SOURCE_EVALUATION_2,
                        intelligence_assessment=pole_pb2.INTELLIGENCE_ASSESSMENT_C,
                        handling=security_pb2.HANDLING_CODE_C,
                        handling_conditions="Handler's consent needed",
                    ),
                ),
            ),
            metadata=md(tokens, "researcher.emsou"),
        )

    console_url = national_console
    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = await browser.new_context()
        page = await context.new_page()
        watch_policy(page, errors)
        await sign_in(page, console_url, NC, "Op HERON national figures")
        await page.get_by_role("link", name="National").click()
        await page.wait_for_url(f"{console_url}/national")
        table = page.get_by_role("table", name="Figures per region")
        emsou_row = table.locator("tr", has=page.get_by_role("rowheader", name="EMSOU", exact=True))
        assert int(await emsou_row.locator("td").first.inner_text()) >= expected
        assert await table.locator("tbody tr").count() == 12  # eleven regions and the total
        assert await page.locator("figure svg.chart").count() == 6
        await no_serious_violations(page)
        await shot(page, "national")
        await page.select_option("#region", "EMSOU")
        await page.get_by_role("button", name="Show").click()
        await page.wait_for_url(f"{console_url}/national?**")
        forces = page.get_by_role("table", name="Jobs per requesting force")
        notts_row = forces.locator("tr", has=page.get_by_role("rowheader", name="Nottinghamshire Police"))
        assert int(await notts_row.locator("td").first.inner_text()) >= 1
        await no_serious_violations(page)
        await shot(page, "national-region")
        await context.close()

        # A region's supervisor gets their own region; a researcher is refused with what to do.
        for user, status in (("supervisor.emsou", 200), ("researcher.emsou", 403)):
            context = await browser.new_context()
            page = await context.new_page()
            watch_policy(page, errors)
            await sign_in(page, console_url, user, "Op HERON")
            answer = await page.goto(f"{console_url}/national")
            assert answer is not None and answer.status == status
            if status == 200:
                rows = page.get_by_role("table", name="Figures per region").locator("tbody tr")
                assert await rows.count() == 2  # EMSOU and the total
                refused = await page.goto(f"{console_url}/national?region=ERSOU")
                assert refused is not None and refused.status == 403
                assert (
                    "a supervisor of EMSOU sees the overview of EMSOU only"
                    in await page.locator(".refusal").inner_text()
                )
                pnd_page = await page.goto(f"{console_url}/pnd")
                assert pnd_page is not None and pnd_page.status == 200
                assert "Held for a supervisor" in await page.locator(".facts").inner_text()
                await page.get_by_role("button", name="Run a reconciliation now").click()
                await page.wait_for_url(f"{console_url}/pnd?done=1")
                report = await page.get_by_role("table", name="Reconciliation per region").inner_text()
                assert "EMSOU" in report and "ERSOU" not in report
                assert (
                    held.record.name
                    in await page.get_by_role("table", name="Records out of step").inner_text()
                )
                await no_serious_violations(page)
                await shot(page, "pnd")
            else:
                text = await page.locator(".refusal").inner_text()
                assert "ask a national coordinator" in text
                await no_serious_violations(page)
            await context.close()
        await browser.close()
    assert not errors, errors
