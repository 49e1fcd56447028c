"""One CLI, many installations: fake installations on free loopback ports (each a gRPC server
holding fake tasking, inbox, entity, safeguarding and comms services), a directory file naming
them, and `toex` run against it: routing by region, every-region lists with an installation
down, WRONG_INSTALLATION answers, and no directory (or an address given) as before."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from cli_testkit import FakeService, FakeTasking, make_jwt
from click.testing import Result
from google.protobuf import any_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2
from toex.comms.v1 import comms_pb2
from toex.entity.v1 import entity_pb2
from toex.pnd.v1 import pnd_pb2
from toex.safeguarding.v1 import safeguarding_pb2
from toex.tasking.v1 import inbox_pb2, tasking_pb2_grpc
from toex.tasking.v1 import tasking_pb2 as pb
from toex.type.v1 import region_pb2
from toex_cli.context import CliContext
from toex_cli.credentials import CredentialStore, TokenSource
from toex_cli.directory import DirectoryError, DirectorySource, parse
from toex_cli.routing import region_of
from toex_kernel.regions import Region

NATIONAL_TOKEN = make_jwt(
    preferred_username="coordinator.national",
    region="NATIONAL",
    realm_access={"roles": ["national_coordinator"]},
)
LONDON_TOKEN = make_jwt(preferred_username="researcher.london", region="LONDON")

FAKES = {
    "inbox": inbox_pb2.DESCRIPTOR.services_by_name["InboxService"],
    "entity": entity_pb2.DESCRIPTOR.services_by_name["EntityResolutionService"],
    "safeguarding": safeguarding_pb2.DESCRIPTOR.services_by_name["SafeguardingService"],
    "comms": comms_pb2.DESCRIPTOR.services_by_name["CommsAnalysisService"],
    "pnd": pnd_pb2.DESCRIPTOR.services_by_name["PndSyncService"],
}


@dataclass
class FakeInstallation:
    """One installation: every service on one address (as behind a gateway routing by service)."""

    name: str
    address: str
    tasking: FakeTasking
    fakes: dict[str, FakeService]
    server: grpc.Server | None = None

    def __getitem__(self, service: str) -> FakeService:
        return self.fakes[service]

    def methods(self) -> list[str]:
        """Every method this installation was asked, in order, across its services."""
        return [c.method for c in self.tasking.calls] + [
            c.method for f in self.fakes.values() for c in f.calls
        ]


@dataclass
class Federation:
    tmp: Path
    installations: dict[str, FakeInstallation] = field(default_factory=dict)

    def start(self, name: str) -> FakeInstallation:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        tasking = FakeTasking()
        tasking_pb2_grpc.add_TaskingServiceServicer_to_server(tasking, server)
        fakes = {service: FakeService(descriptor) for service, descriptor in FAKES.items()}
        server.add_generic_rpc_handlers([fake.handler() for fake in fakes.values()])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        installation = FakeInstallation(name, f"127.0.0.1:{port}", tasking, fakes, server)
        self.installations[name] = installation
        return installation

    def down(self, name: str) -> FakeInstallation:
        """An installation nobody answers for: a loopback port with nothing listening."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        installation = FakeInstallation(name, f"127.0.0.1:{port}", FakeTasking(), {})
        self.installations[name] = installation
        return installation

    def directory(self, extra: str = "", **regions: list[str]) -> Path:
        """A directory file naming every installation by its base address."""
        lines = [extra] if extra else []
        for name, installation in self.installations.items():
            lines.append(f"[installations.{name}]")
            lines.append(f'address = "{installation.address}"')
            if name in regions:
                lines.append(f"regions = {json.dumps(regions[name])}")
        path = self.tmp / "installations.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def stop(self) -> None:
        for installation in self.installations.values():
            if installation.server is not None:
                installation.server.stop(grace=None)


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    found = Federation(tmp_path)
    try:
        yield found
    finally:
        found.stop()


def toex(
    run: Callable[..., Result],
    directory: Path | None,
    *args: str,
    token: str = NATIONAL_TOKEN,
    env: dict[str, str | None] | None = None,
) -> Result:
    base: dict[str, str | None] = {
        "TOEX_TOKEN": token,
        "TOEX_PURPOSE": "Op Kestrel",
        "TOEX_INSTALLATIONS": str(directory) if directory else None,
    }
    base.update(env or {})
    return run(*args, env=base)


def stamp(day: int) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(datetime(2026, 11, day, 9, 0, tzinfo=UTC))
    return value


def job(region: str, job_id: str, day: int) -> pb.Job:
    return pb.Job(
        name=f"regions/{region}/jobs/{job_id}",
        state=pb.JOB_STATE_RAISED,
        owning_region=region_pb2.Region.Value(f"REGION_{region}"),
        operation_name=f"Op {job_id}",
        create_time=stamp(day),
    )


def wrong_installation(region: str, installation: str) -> status_pb2.Status:
    """What a region installation answers for another region's resource."""
    info = error_details_pb2.ErrorInfo(
        reason="WRONG_INSTALLATION",
        domain="toex",
        metadata={"region": region, "installation": installation},
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    return status_pb2.Status(
        code=code_pb2.FAILED_PRECONDITION,
        message=f"{region} is served by installation {installation}",
        details=[packed],
    )


# Routing by region


def test_a_job_goes_to_the_installation_of_its_region(
    run: Callable[..., Result], federation: Federation
) -> None:
    emsou, london = federation.start("EMSOU"), federation.start("LONDON")
    directory = federation.directory()
    emsou.tasking.answers["GetJob"] = pb.GetJobResponse(job=job("EMSOU", "e1", 2))
    london.tasking.answers["GetJob"] = pb.GetJobResponse(job=job("LONDON", "l1", 3))
    london.tasking.answers["CreateJob"] = lambda request: pb.CreateJobResponse(job=job("LONDON", "new", 4))

    shown = toex(run, directory, "jobs", "show", "EMSOU/e1")
    assert shown.exit_code == 0, shown.output
    assert "regions/EMSOU/jobs/e1" in shown.stdout
    assert [c.request.name for c in emsou.tasking.calls] == ["regions/EMSOU/jobs/e1"]
    assert london.tasking.calls == []

    toex(run, directory, "jobs", "show", "regions/LONDON/jobs/l1")
    created = toex(
        run, directory,
        "jobs", "create", "--region", "london", "--type", "anpr", "--unit", "Met", "--officer", "DC Jones",
        "--operation", "Op Heron", "--due", "2026-12-01",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    assert [(c.method, getattr(c.request, "name", "") or c.request.parent) for c in london.tasking.calls] == [
        ("GetJob", "regions/LONDON/jobs/l1"),
        ("CreateJob", "regions/LONDON"),
    ]
    assert len(emsou.tasking.calls) == 1  # nothing more went to EMSOU
    # The token and purpose go to whichever installation is asked.
    assert london.tasking.calls[0].metadata["authorization"] == f"Bearer {NATIONAL_TOKEN}"
    assert london.tasking.calls[0].metadata["x-toex-purpose"] == "Op Kestrel"


def test_an_upload_goes_where_its_header_says(
    run: Callable[..., Result], federation: Federation, tmp_path: Path
) -> None:
    emsou, london = federation.start("EMSOU"), federation.start("LONDON")
    directory = federation.directory()
    emsou["comms"].answers["ImportCdr"] = comms_pb2.ImportCdrResponse()
    calls = tmp_path / "calls.csv"
    calls.write_text("caller,called,start_time\n", encoding="utf-8")

    result = toex(
        run, directory, "comms", "import-cdr", str(calls), "--region", "EMSOU", "--job", "EMSOU/j1",
        token=LONDON_TOKEN,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    [call] = emsou["comms"].calls
    assert call.request.header.parent == "regions/EMSOU"
    assert call.request.header.job == "regions/EMSOU/jobs/j1"
    assert london.methods() == []


def test_a_call_naming_no_region_goes_to_the_home_installation(
    run: Callable[..., Result], federation: Federation
) -> None:
    emsou, london = federation.start("EMSOU"), federation.start("LONDON")
    for installation in (emsou, london):
        installation["entity"].answers["GetEntity"] = entity_pb2.GetEntityResponse(
            entity=entity_pb2.Entity(name="entities/abc")
        )

    # Without `home`, the installation serving the login's region.
    result = toex(run, federation.directory(), "entity", "show", "abc", token=LONDON_TOKEN)
    assert result.exit_code == 0, result.output
    assert london.methods() == ["GetEntity"] and emsou.methods() == []

    # `home` in the file wins over the login's region.
    result = toex(run, federation.directory('home = "emsou"'), "entity", "show", "abc", token=LONDON_TOKEN)
    assert result.exit_code == 0, result.output
    assert emsou.methods() == ["GetEntity"]


def test_a_region_no_installation_serves_is_an_error_that_says_what_to_add(
    run: Callable[..., Result], federation: Federation
) -> None:
    emsou = federation.start("EMSOU")
    result = toex(run, federation.directory(), "jobs", "show", "ERSOU/x1")
    assert result.exit_code == 1
    assert "no installation in" in result.stderr and "serves ERSOU" in result.stderr
    assert "[installations.ERSOU]" in result.stderr
    assert emsou.methods() == []


# Every region at once


def test_every_region_gathers_every_installation_and_names_the_one_that_did_not_answer(
    run: Callable[..., Result], federation: Federation
) -> None:
    emsou, london, hub = federation.start("EMSOU"), federation.down("LONDON"), federation.start("hub")
    directory = federation.directory()
    emsou.tasking.answers["ListJobs"] = pb.ListJobsResponse(
        jobs=[job("EMSOU", "e3", 3), job("EMSOU", "e1", 1)]
    )
    hub.tasking.answers["ListJobs"] = pb.ListJobsResponse(jobs=[job("NATIONAL", "n2", 2)])

    result = toex(run, directory, "jobs", "list", "--region", "-")

    assert result.exit_code == 3, result.output
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names == ["regions/EMSOU/jobs/e3", "regions/NATIONAL/jobs/n2", "regions/EMSOU/jobs/e1"]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("LONDON:")]
    assert line.startswith("LONDON: not answered (UNAVAILABLE:")
    assert line.endswith(f") [installation LONDON, {london.address}]")
    assert "Partial answer: 2 of 3 installations answered" in result.stderr
    # Each installation is asked what it holds that the caller may see, as without a directory.
    assert [c.request.parent for c in emsou.tasking.calls + hub.tasking.calls] == ["regions/-", "regions/-"]

    as_json = toex(run, directory, "jobs", "list", "--format", "json")
    assert as_json.exit_code == 3
    data = json.loads(as_json.stdout)
    assert [j["name"] for j in data["jobs"]] == names
    assert data["unanswered"] == [
        {
            "regions": ["LONDON"],
            "installation": "LONDON",
            "address": london.address,
            "error": data["unanswered"][0]["error"],
        }
    ]
    assert data["unanswered"][0]["error"].startswith("UNAVAILABLE:")


def test_every_region_answered_exits_zero_and_says_which_regions_no_installation_serves(
    run: Callable[..., Result], federation: Federation
) -> None:
    emsou, london = federation.start("EMSOU"), federation.start("LONDON")
    emsou.tasking.answers["ListJobs"] = pb.ListJobsResponse(jobs=[job("EMSOU", "e1", 1)], next_page_token="t")
    london.tasking.answers["ListJobs"] = pb.ListJobsResponse(jobs=[job("LONDON", "l2", 2)])

    result = toex(run, federation.directory(), "jobs", "list", "--limit", "1")

    assert result.exit_code == 0, result.output
    # The newest one across both, then a note: EMSOU has more, and LONDON's was cut by --limit.
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["regions/LONDON/jobs/l2"]
    assert "More jobs match (EMSOU)" in result.stderr
    assert "Not asked (no installation in" in result.stderr
    assert "ERSOU, ROCUWM, TARIAN, SE, SW, NE, NW, YH, NATIONAL" in result.stderr
    assert "not answered" not in result.stderr


def test_no_installation_answering_is_an_error(run: Callable[..., Result], federation: Federation) -> None:
    federation.down("EMSOU"), federation.down("LONDON")
    result = toex(run, federation.directory(), "jobs", "list")
    assert result.exit_code == 1
    assert "EMSOU: not answered (UNAVAILABLE" in result.stderr
    assert "LONDON: not answered (UNAVAILABLE" in result.stderr
    assert "Error: UNAVAILABLE" in result.stderr
    assert "Check [installations.EMSOU]" in result.stderr


def test_a_refusal_is_not_called_no_answer(run: Callable[..., Result], federation: Federation) -> None:
    emsou, london = federation.start("EMSOU"), federation.start("LONDON")
    emsou.tasking.answers["ListJobs"] = pb.ListJobsResponse(jobs=[job("EMSOU", "e1", 1)])
    london.tasking.answers["ListJobs"] = status_pb2.Status(
        code=code_pb2.PERMISSION_DENIED, message="you may list jobs of EMSOU only"
    )
    result = toex(run, federation.directory(), "jobs", "list")
    assert result.exit_code == 3
    assert (
        "LONDON: refused (PERMISSION_DENIED: you may list jobs of EMSOU only) [installation LONDON"
        in result.stderr
    )
    assert "regions/EMSOU/jobs/e1" in result.stdout


def test_a_page_token_needs_one_region_when_there_are_installations(
    run: Callable[..., Result], federation: Federation
) -> None:
    federation.start("EMSOU")
    result = toex(run, federation.directory(), "jobs", "list", "--page-token", "abc")
    assert result.exit_code == 2
    assert "give --region CODE with it" in result.stderr


def test_the_overdue_referrals_of_every_region(run: Callable[..., Result], federation: Federation) -> None:
    emsou, london, hub = federation.start("EMSOU"), federation.start("LONDON"), federation.down("hub")

    def overdue(region: str, referral: str, day: int) -> safeguarding_pb2.OverdueItem:
        return safeguarding_pb2.OverdueItem(
            referral=f"regions/{region}/referrals/{referral}",
            region=region_pb2.Region.Value(f"REGION_{region}"),
            clock=safeguarding_pb2.StatutoryClock(due_time=stamp(day)),
        )

    emsou["safeguarding"].answers["ListOverdue"] = safeguarding_pb2.ListOverdueResponse(
        items=[overdue("EMSOU", "r5", 5)], total_size=1
    )
    london["safeguarding"].answers["ListOverdue"] = safeguarding_pb2.ListOverdueResponse(
        items=[overdue("LONDON", "r1", 1), overdue("LONDON", "r7", 7)], total_size=2
    )

    result = toex(run, federation.directory(), "referrals", "overdue")

    assert result.exit_code == 3, result.output
    # Most overdue first, whichever installation holds it.
    referrals = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert referrals == [
        "regions/LONDON/referrals/r1",
        "regions/EMSOU/referrals/r5",
        "regions/LONDON/referrals/r7",
    ]
    assert "3 overdue" in result.stderr
    assert "NATIONAL: not answered (UNAVAILABLE:" in result.stderr
    assert f"[installation hub, {hub.address}]" in result.stderr


@pytest.mark.parametrize(
    ("command", "service", "method", "answer"),
    [
        (
            ["referrals", "list"], "safeguarding", "ListReferrals",
            safeguarding_pb2.ListReferralsResponse(
                referrals=[safeguarding_pb2.Referral(name="regions/EMSOU/referrals/r1")]
            ),
        ),
        (
            ["pnd", "list"], "pnd", "ListIntelligence",
            pnd_pb2.ListIntelligenceResponse(records=[pnd_pb2.IntelligenceRecord(name="regions/EMSOU/intelligence/i1")]),
        ),
        (
            ["comms", "datasets"], "comms", "ListDatasets",
            comms_pb2.ListDatasetsResponse(datasets=[comms_pb2.Dataset(name="regions/EMSOU/datasets/d1")]),
        ),
        (
            ["entity", "reviews"], "entity", "ListReviewTasks",
            entity_pb2.ListReviewTasksResponse(
                review_tasks=[entity_pb2.ReviewTask(name="regions/EMSOU/reviewTasks/t1")]
            ),
        ),
    ],
)  # fmt: skip
def test_other_lists_of_every_region_gather_too(
    run: Callable[..., Result],
    federation: Federation,
    command: list[str],
    service: str,
    method: str,
    answer: object,
) -> None:
    emsou, _london = federation.start("EMSOU"), federation.down("LONDON")
    emsou[service].answers[method] = answer  # type: ignore[assignment]

    result = toex(run, federation.directory(), *command, "--format", "json")

    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    [shown] = next(value for key, value in data.items() if isinstance(value, list) and key != "unanswered")
    assert shown["name"].startswith("regions/EMSOU/")
    assert [u["installation"] for u in data["unanswered"]] == ["LONDON"]
    assert "LONDON: not answered (UNAVAILABLE" in result.stderr
    [call] = emsou[service].calls
    assert call.request.parent == "regions/-"


# WRONG_INSTALLATION


def test_wrong_installation_is_asked_again_where_it_points_once(
    run: Callable[..., Result], federation: Federation
) -> None:
    emsou, london = federation.start("EMSOU"), federation.start("LONDON")
    london["entity"].answers["GetEntity"] = wrong_installation("EMSOU", "EMSOU")
    emsou["entity"].answers["GetEntity"] = entity_pb2.GetEntityResponse(
        entity=entity_pb2.Entity(name="entities/abc", display_name="Daniel Harrington")
    )

    result = toex(run, federation.directory(), "entity", "show", "abc", token=LONDON_TOKEN)

    assert result.exit_code == 0, result.output
    assert "Daniel Harrington" in result.stdout
    assert (
        f"installation LONDON does not serve EMSOU; asking installation EMSOU at {emsou.address}"
        in result.stderr
    )
    assert london.methods() == ["GetEntity"] and emsou.methods() == ["GetEntity"]

    # Pointed on again: no third attempt, the error says where the last one pointed.
    emsou["entity"].answers["GetEntity"] = wrong_installation("LONDON", "LONDON")
    again = toex(run, federation.directory(), "entity", "show", "abc", token=LONDON_TOKEN)
    assert again.exit_code == 1
    assert london.methods() == ["GetEntity", "GetEntity"] and emsou.methods() == ["GetEntity", "GetEntity"]
    assert "FAILED_PRECONDITION" in again.stderr


def test_wrong_installation_the_directory_does_not_know_says_what_to_add(
    run: Callable[..., Result], federation: Federation
) -> None:
    london = federation.start("LONDON")
    london["entity"].answers["GetEntity"] = wrong_installation("ERSOU", "ERSOU")
    directory = federation.directory()

    result = toex(run, directory, "entity", "show", "abc", token=LONDON_TOKEN)

    assert result.exit_code == 1
    assert "Hint: ERSOU is served by installation ERSOU, " in result.stderr
    assert f"which {directory} does not list: add [installations.ERSOU]" in result.stderr
    assert london.methods() == ["GetEntity"]


def test_wrong_installation_without_a_directory_says_which_installation_and_how(
    run: Callable[..., Result], federation: Federation
) -> None:
    london = federation.start("LONDON")
    london.tasking.answers["GetJob"] = wrong_installation("EMSOU", "EMSOU")

    result = toex(run, None, "jobs", "show", "EMSOU/e1", env={"TOEX_TASKING_ADDR": london.address})

    assert result.exit_code == 1
    assert "Error: FAILED_PRECONDITION: EMSOU is served by installation EMSOU" in result.stderr
    assert "reason WRONG_INSTALLATION (toex)" in result.stderr
    assert (
        "Hint: EMSOU is served by installation EMSOU: list it in an installations directory" in result.stderr
    )
    assert "or point --tasking-addr at that installation's tasking service" in result.stderr
    assert london.methods() == ["GetJob"]


# Precedence and no directory


def test_a_given_address_wins_over_the_directory(run: Callable[..., Result], federation: Federation) -> None:
    emsou, london, single = federation.start("EMSOU"), federation.start("LONDON"), federation.start("single")
    directory = federation.directory(single=["NATIONAL"])
    single.tasking.answers["GetJob"] = pb.GetJobResponse(job=job("EMSOU", "e1", 1))
    single.tasking.answers["ListJobs"] = pb.ListJobsResponse(jobs=[job("EMSOU", "e1", 1)])
    emsou["entity"].answers["GetEntity"] = entity_pb2.GetEntityResponse(
        entity=entity_pb2.Entity(name="entities/x")
    )

    for given in (["--tasking-addr", single.address], []):
        env = {} if given else {"TOEX_TASKING_ADDR": single.address}
        shown = toex(run, directory, *given, "jobs", "show", "EMSOU/e1", env=env)
        assert shown.exit_code == 0, shown.output
        listed = toex(run, directory, *given, "jobs", "list", env=env)
        assert listed.exit_code == 0, listed.output
        assert "Not asked" not in listed.stderr  # one address: no gathering
    assert [getattr(c.request, "name", "") or c.request.parent for c in single.tasking.calls] == [
        "regions/EMSOU/jobs/e1", "regions/-", "regions/EMSOU/jobs/e1", "regions/-",
    ]  # fmt: skip
    assert emsou.tasking.calls == [] and london.tasking.calls == []
    # Other services still follow the directory.
    entity = toex(run, directory, "--tasking-addr", single.address, "entity", "show", "x", token=make_jwt())
    assert entity.exit_code == 0, entity.output
    assert emsou.methods() == ["GetEntity"]


def test_without_a_directory_every_call_goes_to_the_one_address(
    run: Callable[..., Result], federation: Federation, config_dir: Path
) -> None:
    single = federation.start("single")
    single.tasking.answers["ListJobs"] = pb.ListJobsResponse(
        jobs=[job("EMSOU", "e1", 1), job("LONDON", "l1", 2)]
    )
    env = {"TOEX_TASKING_ADDR": single.address}

    result = toex(run, None, "jobs", "list", "--format", "json", env=env)

    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == {"jobs"}  # no "unanswered": the output is as it always was
    assert result.stderr == ""
    [call] = single.tasking.calls
    assert call.request.parent == "regions/-"

    # `none` ignores a directory in the default place.
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "installations.toml").write_text('[installations.EMSOU]\naddress = "127.0.0.1:1"\n')
    ignored = toex(run, None, "--installations", "none", "jobs", "list", env=env)
    assert ignored.exit_code == 0, ignored.output
    used = toex(run, None, "jobs", "show", "EMSOU/e1")  # the default file, found in the config dir
    assert used.exit_code == 1
    assert "installation EMSOU's tasking service running at 127.0.0.1:1" in used.stderr


def test_a_broken_directory_is_reported_with_its_place(run: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "installations.toml"
    path.write_text('[installations.EMSOU]\ntasking = "not an address"\n')
    result = toex(run, path, "jobs", "show", "EMSOU/e1")
    assert result.exit_code == 1
    assert f"{path}: installations.EMSOU.tasking: 'not an address' is not host:port" in result.stderr
    assert "--installations none" in result.stderr
    # Commands that need no server are not stopped by it.
    assert toex(run, path, "whoami").exit_code == 0
    missing = toex(run, tmp_path / "missing.toml", "jobs", "show", "EMSOU/e1")
    assert missing.exit_code == 1 and "no installations directory at" in missing.stderr


# `toex installations`


def test_installations_list_and_show(run: Callable[..., Result], federation: Federation) -> None:
    emsou, hub = federation.start("EMSOU"), federation.start("hub")
    directory = federation.directory()
    with directory.open("a") as extra:
        extra.write('oversight = "127.0.0.1:59999"\n')  # the hub's own service, at its own port

    listed = toex(run, directory, "installations", "list", token=LONDON_TOKEN)
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["INSTALLATION", "REGIONS", "ADDRESS", "SERVICES"]
    assert rows[1] == ["EMSOU", "EMSOU", emsou.address]
    assert rows[2] == ["hub", "NATIONAL", hub.address, "oversight=127.0.0.1:59999"]
    assert f"Directory: {directory}" in listed.stderr
    assert "Home (calls naming no region): unknown" in listed.stderr  # LONDON has no installation here
    assert "No installation serves: ERSOU, ROCUWM, LONDON" in listed.stderr

    shown = toex(run, directory, "--comms-addr", "127.0.0.1:50054", "installations", "show", "national")
    assert shown.exit_code == 0, shown.output
    fields = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    assert fields["installation"].strip() == "hub"
    assert fields["tasking"].strip() == hub.address
    assert fields["oversight"].strip() == "127.0.0.1:59999"
    assert fields["comms"].strip() == "127.0.0.1:50054 (given: it wins over the directory)"

    none = toex(run, None, "installations", "list")
    assert none.exit_code == 0
    assert "No installations directory" in none.stderr
    assert ["tasking", "127.0.0.1:50051", "default"] in [line.split() for line in none.stdout.splitlines()]


def test_help_explains_the_directory(run: Callable[..., Result]) -> None:
    text = " ".join(run("installations", "--help").output.split())
    for said in ("[installations.EMSOU]", "home =", "first match wins", "WRONG_INSTALLATION", "exits with 3"):
        assert said in text
    assert "--installations FILE" in run("--help").output


def test_a_service_of_one_installation_goes_there_whatever_region_it_names(
    federation: Federation, tmp_path: Path
) -> None:
    emsou, hub = federation.start("EMSOU"), federation.start("hub")
    hub.tasking.answers["GetJob"] = pb.GetJobResponse(job=job("EMSOU", "e1", 1))
    hub.tasking.answers["ListJobs"] = pb.ListJobsResponse()
    cli = CliContext(
        purpose="Op Kestrel",
        addresses={"tasking": "127.0.0.1:1"},
        timeout=10,
        tokens=TokenSource(CredentialStore(tmp_path / "credentials.json"), env_token=NATIONAL_TOKEN),
        fixed={"tasking": "hub"},  # as Endpoint("oversight", ..., installation="hub") makes it
        directory_source=DirectorySource(federation.directory(), named=True),
    )
    stub = tasking_pb2_grpc.TaskingServiceStub(cli.channel("tasking"))
    try:
        cli.call("tasking", stub.GetJob, pb.GetJobRequest(name="regions/EMSOU/jobs/e1"))
        gathered = cli.gather("tasking", lambda: cli.call("tasking", stub.ListJobs, pb.ListJobsRequest()))
    finally:
        cli.close()
    assert not gathered.fanned_out
    assert hub.methods() == ["GetJob", "ListJobs"] and emsou.methods() == []


# The pieces


@pytest.mark.parametrize(
    ("request_message", "region"),
    [
        (pb.GetJobRequest(name="regions/LONDON/jobs/x"), Region.LONDON),
        (pb.ListJobsRequest(parent="regions/-"), None),
        (pb.UpdateJobRequest(job=pb.Job(name="regions/ERSOU/jobs/x")), Region.ERSOU),
        (pb.AddJobNoteRequest(parent="regions/SW/jobs/x", text="regions/NE/jobs/y"), Region.SW),
        (comms_pb2.ImportCdrRequest(header=comms_pb2.ImportHeader(parent="regions/YH")), Region.YH),
        (
            comms_pb2.GetContactNetworkRequest(
                scope=comms_pb2.AnalysisScope(parent="regions/TARIAN", job="regions/TARIAN/jobs/j")
            ),
            Region.TARIAN,
        ),
        (entity_pb2.GetEntityRequest(name="entities/abc"), None),
        (entity_pb2.SplitEntityRequest(name="entities/abc", records=["regions/NW/records/r"]), Region.NW),
        (inbox_pb2.ListInboxItemsRequest(parent="users/me"), None),
    ],
)
def test_the_region_a_request_names(request_message: object, region: Region | None) -> None:
    assert region_of(request_message) == region  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[installations.EMSOU]\naddress = 1\n", "must be an address in quotes"),
        ("[installations.demo]\naddress = \"h:1\"\n", "must say which it serves"),
        ("[installations.EMSOU]\naddress = \"h:1\"\n[installations.x]\nregions=[\"EMSOU\"]\naddress=\"h:2\"\n",
         "region EMSOU is served by both EMSOU and x"),
        ("[installations.EMSOU]\n", "gives no address"),
        ("[installations.EMSOU]\nTasking = \"h:1\"\n", "not a service name"),
        ('home = "LONDON"\n[installations.EMSOU]\naddress = "h:1"\n', "names no installation"),
        ("installations = 3\n", "no installations"),
        ("[installation.EMSOU]\n", "unknown key 'installation'"),
        ("[installations.EMSOU\n", "not TOML"),
    ],
)  # fmt: skip
def test_directory_mistakes_are_named(text: str, problem: str) -> None:
    with pytest.raises(DirectoryError, match=problem):
        parse(Path("d.toml"), text)


def test_directory_names_and_defaults() -> None:
    directory = parse(
        Path("d.toml"),
        '[installations.Hub]\naddress = "tls://10.0.0.1:443"\n'
        '[installations.london]\naddress = "10.0.0.2:50051"\nentity = "[::1]:50052"\n'
        '[installations.demo]\nregions = ["sw", "ne"]\naddress = "localhost:50051"\n',
    )
    assert [i.name for i in directory.installations] == ["LONDON", "demo", "hub"]  # in the regions' order
    assert directory.serving(Region.NATIONAL) == directory.named("HUB")
    assert directory.serving(Region.NE) == directory.named("demo")
    london = directory.named("LONDON")
    assert london is not None
    assert (london.address_of("entity"), london.address_of("tasking")) == ("[::1]:50052", "10.0.0.2:50051")
