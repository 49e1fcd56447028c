"""The comms pages against a real comms service (its own PostgreSQL database and data folder),
a real tasking service and the real Keycloak: upload the demo files with the person's own token
and purpose, rejected rows by line, the ranked suspects, common contacts, watchlist contacts,
convoys, the network as JSON and the exports the CLI writes; another region's job is not found
and nothing of it is stored. The browser scenario is in test_browser.py."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from toex.comms.v1 import comms_pb2 as pb
from toex.comms.v1 import comms_pb2_grpc
from toex.comms.v1 import resources_pb2 as res
from toex.tasking.v1 import tasking_pb2 as tasking_pb
from toex_common.migrations import upgrade
from toex_comms.__main__ import migrations_dir as comms_migrations
from toex_comms.bootstrap import build as build_comms
from toex_comms.config import Settings as CommsSettings
from toex_comms.demo import DEMO_TARGETS, write_demo_files
from toex_console.app import create_app
from toex_console.config import Settings
from toex_devstack.keycloak import Keycloak

from .conftest import PUBLIC_URL
from .test_sign_in_and_jobs import NC, csrf_of, job, sign_in

pytestmark = pytest.mark.integration

RESEARCHER = "researcher.emsou"
BAD_ROW = "yesterday,60,07700 900001,07700 900100,voice,,,,\n"


@contextlib.asynccontextmanager
async def running_comms(
    postgres, nats_server, keycloak: Keycloak, data_dir: Path, consume: bool
) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """A real comms service on a free port, its own database and data folder; with `consume`,
    its consumers of tasking's job events (the job grants) run too."""
    name = f"t_console_comms_{uuid.uuid4().hex[:10]}"
    url = postgres.create_database(name)
    await asyncio.to_thread(upgrade, url, comms_migrations())
    app = await build_comms(
        CommsSettings(
            service_name=f"comms-{uuid.uuid4().hex[:8]}",
            database_url=url,
            nats_url=nats_server.url,
            oidc_issuer=keycloak.issuer,
            grpc_port=0,
            service_client_secret="toex-comms-local-secret",
            outbox_poll_seconds=0.2,
            data_dir=data_dir,
            consume_events=consume,
        )
    )
    await app.server.start()
    await app.start_background()
    try:
        yield f"127.0.0.1:{app.port}"
    finally:
        await app.server.stop(1)
        await app.shutdown()
        postgres.drop_database(name)


@pytest.fixture
async def comms_addr(postgres, nats_server, keycloak: Keycloak, tmp_path: Path) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    async with running_comms(postgres, nats_server, keycloak, tmp_path / "comms-data", False) as addr:
        yield addr


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """The demo files the local stack's comms service writes (`python -m toex_comms seed-demo`)."""
    write_demo_files(tmp_path / "comms-demo")
    return tmp_path / "comms-demo"


@pytest.fixture
async def comms_console(
    keycloak: Keycloak, console_secret: str, tasking_addr: str, comms_addr: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        oidc_issuer=keycloak.issuer,
        console_client_secret=console_secret,
        public_url=PUBLIC_URL,
        tasking_addr=tasking_addr,
        comms_addr=comms_addr,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings)), base_url=PUBLIC_URL, timeout=60
    ) as client:
        yield client


async def choose_purpose(console: httpx.AsyncClient, purpose: str) -> str:
    """Sets the purpose; the CSRF token of the session."""
    csrf = csrf_of((await console.get("/")).text)
    chosen = await console.post("/purpose", data={"csrf_token": csrf, "purpose": purpose, "next": "/"})
    assert chosen.status_code == 303
    return csrf


def md(tokens, username: str, purpose: str = "Op KESTREL") -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [("authorization", f"Bearer {tokens[username]}"), ("x-toex-purpose", purpose)]


async def test_upload_results_network_and_exports(
    comms_console, tasking_stub, comms_addr, tokens, demo
) -> None:  # type: ignore[no-untyped-def]
    console = comms_console
    name = (await tasking_stub.CreateJob(job("EMSOU", "Op KESTREL"), metadata=md(tokens, NC))).job.name
    suffix = uuid.uuid4().hex[:6]
    async with grpc.aio.insecure_channel(comms_addr) as ch:
        comms = comms_pb2_grpc.CommsAnalysisServiceStub(ch)
        # The demo's 300 (a registered sex offender) calls 301 (a victim) three times.
        for list_id, kind, number in (
            (f"rso-{suffix}", res.WATCHLIST_KIND_REGISTERED_SEX_OFFENDER, "07700 900300"),
            (f"victims-{suffix}", res.WATCHLIST_KIND_VICTIM, "07700 900301"),
        ):
            created = await comms.CreateWatchlist(
                pb.CreateWatchlistRequest(
                    parent="regions/EMSOU",
                    watchlist_id=list_id,
                    watchlist=pb.Watchlist(display_name=list_id, kind=kind),
                ),
                metadata=md(tokens, RESEARCHER),
            )
            await comms.AddWatchlistNumbers(
                pb.AddWatchlistNumbersRequest(name=created.watchlist.name, numbers=[number]),
                metadata=md(tokens, RESEARCHER),
            )

        await sign_in(console, RESEARCHER)
        csrf = await choose_purpose(console, "Op KESTREL")
        page = await console.get(f"/{name}/comms")
        assert page.status_code == 200 and "No datasets yet" in page.text

        # Without the CSRF token nothing is uploaded.
        cdr = (demo / "cdr.csv").read_bytes() + BAD_ROW.encode()
        refused = await console.post(
            f"/{name}/comms/upload", data={"kind": "cdr"}, files={"file": ("cdr.csv", cdr, "text/csv")}
        )
        assert refused.status_code == 403

        uploaded = await console.post(
            f"/{name}/comms/upload",
            data={"csrf_token": csrf, "kind": "cdr"},
            files={"file": ("cdr.csv", cdr, "text/csv")},
        )
        assert uploaded.status_code == 303, uploaded.text[-2000:]
        dataset_url = uploaded.headers["location"]
        assert dataset_url.startswith("/regions/EMSOU/datasets/") and dataset_url.endswith("imported=new")
        shown = await console.get(dataset_url)
        assert shown.status_code == 200
        assert "22 read, 21 stored, 1 rejected" in shown.text
        assert "<td>23</td><td>start_time" in shown.text  # the bad row, by its line in the file
        # The service stored it as this job's, imported by the person who uploaded it.
        dataset_name = dataset_url.split("?")[0].lstrip("/")
        stored = await comms.GetDataset(pb.GetDatasetRequest(name=dataset_name), metadata=md(tokens, NC))
        assert stored.dataset.job == name and stored.dataset.created_by == RESEARCHER

        # The same bytes again: nothing changes.
        again = await console.post(
            f"/{name}/comms/upload",
            data={"csrf_token": csrf, "kind": "cdr"},
            files={"file": ("cdr.csv", cdr, "text/csv")},
        )
        assert again.headers["location"] == dataset_url.replace("imported=new", "imported=again")

        anpr = await console.post(
            f"/{name}/comms/upload",
            data={"csrf_token": csrf, "kind": "anpr"},
            files={"file": ("anpr.csv", (demo / "anpr.csv").read_bytes(), "text/csv")},
        )
        assert anpr.status_code == 303
        anpr_page = (await console.get(anpr.headers["location"])).text
        assert "<td>AB12CDE</td><td>XY34ZZZ</td><td>9</td><td>3</td>" in anpr_page

        # A file that cannot be read at all: the page says why and that nothing was stored.
        unreadable = await console.post(
            f"/{name}/comms/upload",
            data={"csrf_token": csrf, "kind": "cdr"},
            files={"file": ("notes.csv", b"who,what\nme,that\n", "text/csv")},
        )
        assert unreadable.status_code == 400
        assert "The file was not imported; nothing was stored." in unreadable.text
        assert "Correct it and try again." in unreadable.text
        listed = await comms.ListDatasets(
            pb.ListDatasetsRequest(parent="regions/EMSOU", job=name), metadata=md(tokens, NC)
        )
        assert len(listed.datasets) == 2

        # Before any target: the page asks for them and shows no analysis.
        page = (await console.get(f"/{name}/comms")).text
        assert "Enter the target numbers" in page and "Ranked suspects" not in page
        assert "<td>AB12CDE</td><td>XY34ZZZ</td>" in page  # convoys of the job
        assert "+447700900300" in page and "+447700900301" in page  # the watchlist contact
        targets = "\n".join(DEMO_TARGETS)
        assert (await console.post(f"/{name}/comms/targets", data={"targets": targets})).status_code == 403
        kept = await console.post(f"/{name}/comms/targets", data={"csrf_token": csrf, "targets": targets})
        assert kept.status_code == 303 and "900001" not in kept.headers["location"]
        page = (await console.get(f"/{name}/comms")).text
        suspects = page.split('id="suspects-heading"')[1].split("</table>")[0]
        # 100 reaches three targets, 101 two, 200 one: ranked so, each with its reason.
        rows = suspects.split("<tr><td>")[1:]
        assert [r.split("</td><td>")[1] for r in rows[:3]] == [
            "+447700900100",
            "+447700900101",
            "+447700900200",
        ]
        assert "in contact with 3 of 5 targets" in rows[0]
        common = page.split('id="common-heading"')[1].split("</table>")[0]
        assert "+447700900100" in common and "+447700900200" not in common

        network = await console.get(f"/{name}/comms/network.json")
        assert network.status_code == 200
        graph = network.json()
        ids = {n["data"]["id"] for n in graph["nodes"]}
        assert {"+447700900001", "+447700900100", "+447700900200"} <= ids
        assert all(e["data"]["source"] in ids and e["data"]["target"] in ids for e in graph["edges"])

        # The downloads are the bytes the CLI's `toex comms export` writes (the same Export call).
        for kind, fmt in (("graphml", pb.EXPORT_FORMAT_GRAPHML), ("i2", pb.EXPORT_FORMAT_I2_LINK_CSV)):
            download = await console.get(f"/{name}/comms/export/{kind}")
            assert download.status_code == 200
            assert download.headers["content-disposition"].startswith("attachment; filename=")
            direct = b"".join(
                [
                    part.chunk
                    async for part in comms.Export(
                        pb.ExportRequest(
                            format=fmt,
                            scope=pb.AnalysisScope(parent="regions/EMSOU", job=name),
                            targets=DEMO_TARGETS,
                        ),
                        metadata=md(tokens, RESEARCHER),
                    )
                ]
            )
            assert download.content == direct and b"+447700900100" in direct
        assert (await console.get(f"/{name}/comms/export/exe")).status_code == 404

        # A target that is not a number: the section says which and what to do.
        await console.post(
            f"/{name}/comms/targets", data={"csrf_token": csrf, "targets": targets + "\nnot a number"}
        )
        page = (await console.get(f"/{name}/comms")).text
        assert "Correct it and try again." in page and "targets[5]" in page


async def test_another_regions_job_is_not_found_and_nothing_is_stored(
    comms_console, tasking_stub, comms_addr, tokens, demo
) -> None:  # type: ignore[no-untyped-def]
    console = comms_console
    name = (await tasking_stub.CreateJob(job("EMSOU", "Op HERON"), metadata=md(tokens, NC))).job.name
    async with grpc.aio.insecure_channel(comms_addr) as ch:
        comms = comms_pb2_grpc.CommsAnalysisServiceStub(ch)
        stored = await comms.ImportCdr(
            iter(
                [
                    pb.ImportCdrRequest(
                        header=pb.ImportHeader(parent="regions/EMSOU", job=name, filename="c.csv")
                    ),
                    pb.ImportCdrRequest(chunk=(demo / "cdr.csv").read_bytes()),
                ]
            ),
            metadata=md(tokens, RESEARCHER),
        )
        await sign_in(console, "researcher.ersou")
        csrf = await choose_purpose(console, "Op HERON")
        missing = await console.get("/regions/EMSOU/jobs/no-such-job/comms")
        for address in (f"/{name}/comms", f"/{stored.dataset.name}"):
            answer = await console.get(address)
            assert answer.status_code == 404 and "Not found" in answer.text
            assert answer.text.replace(address, "") == missing.text.replace(
                "/regions/EMSOU/jobs/no-such-job/comms", ""
            )
        uploaded = await console.post(
            f"/{name}/comms/upload",
            data={"csrf_token": csrf, "kind": "cdr"},
            files={"file": ("other.csv", (demo / "cdr.csv").read_bytes() + b"\n", "text/csv")},
        )
        assert uploaded.status_code == 404 and "Not found" in uploaded.text
        await console.post(
            f"/{name}/comms/targets", data={"csrf_token": csrf, "targets": "\n".join(DEMO_TARGETS)}
        )
        assert (await console.get(f"/{name}/comms/network.json")).status_code == 404
        assert (await console.get(f"/{name}/comms/export/graphml")).status_code == 404
        listed = await comms.ListDatasets(
            pb.ListDatasetsRequest(parent="regions/EMSOU", job=name), metadata=md(tokens, NC)
        )
        assert [d.name for d in listed.datasets] == [stored.dataset.name]


async def test_a_london_researcher_assigned_an_emsou_job_works_its_comms_and_only_while_assigned(
    postgres, nats_server, keycloak, console_secret, tasking_addr, tasking_stub, tokens, demo, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The job grant, both ways, through the console: tasking's events (real NATS) reach the
    comms service; London's assignee uploads to the EMSOU job and sees its suspects with the job
    as purpose; ERSOU's researcher, not on the job, finds nothing there."""
    async with running_comms(postgres, nats_server, keycloak, tmp_path / "comms-data", True) as addr:
        settings = Settings(
            oidc_issuer=keycloak.issuer,
            console_client_secret=console_secret,
            public_url=PUBLIC_URL,
            tasking_addr=tasking_addr,
            comms_addr=addr,
        )
        name = (await tasking_stub.CreateJob(job("EMSOU", "Op PLOVER"), metadata=md(tokens, NC))).job.name
        await tasking_stub.AssignJob(
            tasking_pb.AssignJobRequest(name=name, assignees=["researcher.london"]), metadata=md(tokens, NC)
        )
        for username, admitted in (("researcher.london", True), ("researcher.ersou", False)):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(settings)), base_url=PUBLIC_URL, timeout=60
            ) as console:
                await sign_in(console, username)
                csrf = await choose_purpose(console, name)
                upload = {"csrf_token": csrf, "kind": "cdr"}
                cdr = {"file": ("cdr.csv", (demo / "cdr.csv").read_bytes(), "text/csv")}
                if admitted:
                    # The grant arrives with tasking's events: bounded wait for the comms service.
                    for _ in range(100):
                        uploaded = await console.post(f"/{name}/comms/upload", data=upload, files=cdr)
                        if uploaded.status_code == 303:
                            break
                        await asyncio.sleep(0.2)
                    assert uploaded.status_code == 303, uploaded.text[-1500:]
                    assert uploaded.headers["location"].startswith("/regions/EMSOU/datasets/")
                    await console.post(
                        f"/{name}/comms/targets",
                        data={"csrf_token": csrf, "targets": "\n".join(DEMO_TARGETS)},
                    )
                    page = await console.get(f"/{name}/comms")
                    assert page.status_code == 200
                    first = page.text.split('id="suspects-heading"')[1].split("<tr><td>")[1]
                    assert "+447700900100" in first
                else:
                    for address in (f"/{name}/comms", uploaded.headers["location"]):
                        refused = await console.get(address)
                        assert refused.status_code == 404 and "Not found" in refused.text
                    again = await console.post(f"/{name}/comms/upload", data=upload, files=cdr)
                    assert again.status_code == 404
        async with grpc.aio.insecure_channel(addr) as ch:
            listed = await comms_pb2_grpc.CommsAnalysisServiceStub(ch).ListDatasets(
                pb.ListDatasetsRequest(parent="regions/EMSOU", job=name), metadata=md(tokens, NC)
            )
        assert len(listed.datasets) == 1 and listed.datasets[0].created_by == "researcher.london"
