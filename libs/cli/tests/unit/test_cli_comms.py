"""`toex comms ...` against a fake comms service on a free port: what is sent, what is shown."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from cli_testkit import make_jwt
from click.testing import Result
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from toex.comms.v1 import comms_pb2 as pb
from toex.comms.v1 import resources_pb2 as res

TOKEN = make_jwt(preferred_username="analyst.emsou", realm_access={"roles": ["analyst"]})


@dataclass
class Call:
    method: str
    request: Any  # a message, or the list of messages of a client stream
    metadata: dict[str, str]


@dataclass
class FakeComms:
    """Answers what a test sets in `answers` (a message, a function of the request, a list of
    messages for a server stream, or a google.rpc.Status to fail with); records every call."""

    answers: dict[str, Any] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def handle(self, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        self.calls.append(Call(method, request, {k: str(v) for k, v in context.invocation_metadata()}))
        answer = self.answers.get(method)
        if answer is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"the test set no answer for {method}")
        if isinstance(answer, status_pb2.Status):
            context.abort_with_status(rpc_status.to_status(answer))
        return answer(request) if callable(answer) else answer

    def call(self, method: str) -> Call:
        found = [c for c in self.calls if c.method == method]
        assert found, f"{method} was not called"
        return found[-1]


def _handlers(fake: FakeComms) -> grpc.GenericRpcHandler:
    service = pb.DESCRIPTOR.services_by_name["CommsAnalysisService"]
    methods: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        name = method.name
        decode = getattr(pb, method.input_type.name).FromString
        encode = getattr(pb, method.output_type.name).SerializeToString

        if method.client_streaming:

            def stream_in(
                requests: Iterator[Message], context: grpc.ServicerContext, name: str = name
            ) -> Any:
                return fake.handle(name, list(requests), context)

            methods[name] = grpc.stream_unary_rpc_method_handler(
                stream_in, request_deserializer=decode, response_serializer=encode
            )
        elif method.server_streaming:

            def stream_out(
                request: Message, context: grpc.ServicerContext, name: str = name
            ) -> Iterator[Any]:
                yield from fake.handle(name, request, context)

            methods[name] = grpc.unary_stream_rpc_method_handler(
                stream_out, request_deserializer=decode, response_serializer=encode
            )
        else:

            def unary(request: Message, context: grpc.ServicerContext, name: str = name) -> Any:
                return fake.handle(name, request, context)

            methods[name] = grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=decode, response_serializer=encode
            )
    return grpc.method_handlers_generic_handler(service.full_name, methods)


@pytest.fixture
def comms() -> Iterator[tuple[FakeComms, str]]:
    fake = FakeComms()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.max_receive_message_length", 4 << 20)]
    )
    server.add_generic_rpc_handlers((_handlers(fake),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


Comms = tuple[FakeComms, str]


def toex(run: Callable[..., Result], comms: Comms, *args: str, purpose: str | None = "Op Kestrel") -> Result:
    _fake, address = comms
    env: dict[str, str | None] = {"TOEX_TOKEN": TOKEN, "TOEX_COMMS_ADDR": address, "TOEX_PURPOSE": purpose}
    return run(*args, env=env)


def a_dataset(**fields: Any) -> pb.Dataset:
    dataset = pb.Dataset(
        name="regions/EMSOU/datasets/d1",
        kind=res.DATASET_KIND_CDR,
        rows_read=5,
        rows_accepted=4,
        rows_rejected=1,
        distinct_identifiers=3,
    )
    dataset.MergeFrom(pb.Dataset(**fields))
    return dataset


def tie(target: str, contacts: int) -> pb.TargetTie:
    return pb.TargetTie(target=target, contact_count=contacts, call_count=contacts)


def test_import_cdr_streams_the_file_and_reports_rejections(
    run: Callable[..., Result], comms: Comms, tmp_path: Path
) -> None:
    fake, _ = comms
    content = (
        b"start_time,calling_number,called_number\n"
        + b"2024-03-04T09:00:00Z,07700900001,07700900002\n" * 60_000
    )
    src = tmp_path / "calls.csv"
    src.write_bytes(content)
    fake.answers["ImportCdr"] = pb.ImportCdrResponse(
        dataset=a_dataset(),
        rejections=[pb.RowRejection(line=3, reason="calling_number: '12ab' is not a phone number")],
    )
    # no --job: the dataset belongs to the region only
    result = toex(
        run, comms, "comms", "import-cdr", str(src), "--region", "emsou", "--profile", "uk-network-a"
    )
    assert result.exit_code == 0, result.output
    sent = fake.call("ImportCdr").request
    header = sent[0].header
    assert (header.parent, header.job, header.profile, header.filename) == (
        "regions/EMSOU",
        "",
        "uk-network-a",
        "calls.csv",
    )
    assert header.size_bytes == len(content)
    assert b"".join(r.chunk for r in sent[1:]) == content
    assert len(sent) > 2 and all(len(r.chunk) <= 1 << 20 for r in sent[1:])  # streamed in chunks
    assert "uploading calls.csv" in result.stderr
    assert "5 read, 4 stored, 1 rejected" in result.stdout
    lines = [line.split(None, 1) for line in result.stdout.splitlines()]
    assert ["3", "calling_number: '12ab' is not a phone number"] in lines
    assert "period:   no records" in result.stdout


def _picture(path: Path, seed: int, noise: float = 0.0) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(0, 255, (8, 8)), np.ones((32, 32))).astype(np.float64)
    if noise:
        base += np.random.default_rng(99).normal(0, noise, base.shape)
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path)


def test_import_adverts_with_images_uploads_their_perceptual_hashes(
    run: Callable[..., Result], comms: Comms, tmp_path: Path
) -> None:
    from toex_cli.advert_images import perceptual_hash

    fake, _ = comms
    fake.answers["ImportAdverts"] = pb.ImportAdvertsResponse(dataset=a_dataset(kind=res.DATASET_KIND_ADVERTS))
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    _picture(pictures / "a.png", 1)
    _picture(pictures / "a-noisy.png", 1, noise=4.0)
    _picture(pictures / "b.png", 2)
    (pictures / "broken.png").write_bytes(b"not an image")
    src = tmp_path / "adverts.csv"
    src.write_text(
        "number,advert_id,image,image_hash\n"
        "07700 900001,a1,a.png,\n"
        "07700 900002,a2,a-noisy.png,\n"
        "07700 900003,a3,b.png,\n"
        "07700 900004,a4,broken.png,\n"
        "07700 900005,a5,../../etc/passwd,\n"
        "07700 900006,a6,a.png,00000000000000ff\n",
        encoding="utf-8",
    )
    result = toex(
        run, comms, "comms", "import-adverts", str(src), "--images", str(pictures), "--region", "EMSOU"
    )
    assert result.exit_code == 0, result.output
    sent = fake.call("ImportAdverts").request
    assert sent[0].header.filename == "adverts.csv" and sent[0].header.encoding == ""
    body = b"".join(r.chunk for r in sent[1:]).decode("utf-8").splitlines()
    assert sent[0].header.size_bytes == len(b"".join(r.chunk for r in sent[1:]))
    hashes = [line.rsplit(",", 1)[1] for line in body[1:]]
    assert hashes[0] == f"{perceptual_hash(pictures / 'a.png'):016x}"
    assert bin(int(hashes[0], 16) ^ int(hashes[1], 16)).count("1") <= 3  # the same picture, re-saved
    assert bin(int(hashes[0], 16) ^ int(hashes[2], 16)).count("1") > 10  # another picture
    assert hashes[3:] == ["", "", "00000000000000ff"]  # unreadable, outside the folder, given
    assert "adverts.csv: line 5: image: cannot be read: broken.png" in result.stderr
    assert "adverts.csv: line 6: image: outside the images folder" in result.stderr

    no_column = tmp_path / "plain.csv"
    no_column.write_text("number,advert_id\n07700 900001,a1\n", encoding="utf-8")
    refused = toex(
        run, comms, "comms", "import-adverts", str(no_column), "--images", str(pictures), "--region", "EMSOU"
    )
    assert refused.exit_code == 1 and "no 'image' column" in refused.stderr


def _bad_request(field: str, description: str) -> status_pb2.Status:
    bad = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=description)]
    )
    detail = any_pb2.Any()
    detail.Pack(bad)
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="invalid request", details=[detail])


def test_import_adverts_through_a_profile_and_a_refused_one_names_the_option(
    run: Callable[..., Result], comms: Comms, tmp_path: Path
) -> None:
    fake, _ = comms
    fake.answers["ImportAdverts"] = pb.ImportAdvertsResponse(
        dataset=a_dataset(kind=res.DATASET_KIND_ADVERTS, profile="scraped-adverts"),
        rejections=[pb.RowRejection(line=3, reason="number: not a phone number: x")],
    )
    src = tmp_path / "scrape.csv"
    src.write_text("ad_id,phone\ns1,07700 900001\ns2,x\n", encoding="utf-8")
    result = toex(
        run, comms, "comms", "import-adverts", str(src), "--profile", "scraped-adverts", "--region", "EMSOU"
    )
    assert result.exit_code == 0, result.output
    assert fake.call("ImportAdverts").request[0].header.profile == "scraped-adverts"
    assert ["3", "number: not a phone number: x"] in [
        line.split(None, 1) for line in result.stdout.splitlines()
    ]

    fake.answers["ImportAdverts"] = _bad_request(
        "header.profile", "mapping profile 'canonical' reads call data"
    )
    refused = toex(
        run, comms, "comms", "import-adverts", str(src), "--profile", "canonical", "--region", "EMSOU"
    )
    assert refused.exit_code == 1
    assert "header.profile (--profile): mapping profile 'canonical' reads call data" in refused.stderr


def test_import_adverts_with_images_through_a_profile_uses_its_columns_and_separator(
    run: Callable[..., Result], comms: Comms, tmp_path: Path
) -> None:
    from toex_cli.advert_images import perceptual_hash

    fake, _ = comms
    fake.answers["ImportAdverts"] = pb.ImportAdvertsResponse(dataset=a_dataset(kind=res.DATASET_KIND_ADVERTS))
    fake.answers["ListMappingProfiles"] = pb.ListMappingProfilesResponse(
        profiles=[
            pb.MappingProfile(
                name="regions/EMSOU/mappingProfiles/site-x",
                kind=res.DATASET_KIND_ADVERTS,
                columns={"number": "Phone", "advert_id": "Ref", "image": "Photo", "image_hash": "Hash"},
                separator=";",
            ),
            pb.MappingProfile(
                name="regions/EMSOU/mappingProfiles/no-hash",
                kind=res.DATASET_KIND_ADVERTS,
                columns={"number": "Phone", "advert_id": "Ref", "image": "Photo"},
            ),
        ]
    )
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    _picture(pictures / "a.png", 1)
    src = tmp_path / "adverts.csv"
    src.write_text("Phone;Ref;Photo\n07700 900001;a1;a.png\n07700 900002;a2;missing.png\n", encoding="utf-8")
    args = ("comms", "import-adverts", str(src), "--images", str(pictures), "--region", "EMSOU")
    result = toex(run, comms, *args, "--profile", "site-x")
    assert result.exit_code == 0, result.output
    assert fake.call("ListMappingProfiles").request.kind == res.DATASET_KIND_ADVERTS
    sent = fake.call("ImportAdverts").request
    assert sent[0].header.profile == "site-x"
    body = b"".join(r.chunk for r in sent[1:]).decode("utf-8").splitlines()
    assert body[0] == "Phone;Ref;Photo;Hash"
    assert body[1] == f"07700 900001;a1;a.png;{perceptual_hash(pictures / 'a.png'):016x}"
    assert body[2] == "07700 900002;a2;missing.png;"
    assert "adverts.csv: line 3: Photo: cannot be read: missing.png" in result.stderr

    no_hash = toex(run, comms, *args, "--profile", "no-hash")
    assert no_hash.exit_code == 2 and "names no image_hash column" in no_hash.stderr
    unknown = toex(run, comms, *args, "--profile", "nope")
    assert unknown.exit_code == 2 and "no advert mapping profile 'nope'" in unknown.stderr


def test_profiles_by_kind_and_create_an_advert_profile(run: Callable[..., Result], comms: Comms) -> None:
    fake, _ = comms
    fake.answers["ListMappingProfiles"] = pb.ListMappingProfilesResponse(
        profiles=[
            pb.MappingProfile(name="mappingProfiles/canonical", columns={"start_time": "start_time"}),
            pb.MappingProfile(
                name="mappingProfiles/canonical-adverts",
                kind=res.DATASET_KIND_ADVERTS,
                columns={"number": "number"},
            ),
        ]
    )
    listed = toex(run, comms, "comms", "profiles", "--region", "EMSOU")
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[1:] if line.strip()}
    assert (
        rows["mappingProfiles/canonical"] == "cdr" and rows["mappingProfiles/canonical-adverts"] == "adverts"
    )
    assert fake.call("ListMappingProfiles").request.kind == res.DATASET_KIND_UNSPECIFIED
    toex(run, comms, "comms", "profiles", "--region", "EMSOU", "--kind", "adverts")
    assert fake.call("ListMappingProfiles").request.kind == res.DATASET_KIND_ADVERTS

    fake.answers["CreateMappingProfile"] = lambda request: pb.CreateMappingProfileResponse(
        profile=pb.MappingProfile(
            name=f"regions/EMSOU/mappingProfiles/{request.profile_id}",
            **{
                "kind": request.profile.kind,
                "columns": request.profile.columns,
                "separator": request.profile.separator,
            },
        )
    )
    created = toex(
        run,
        comms,
        "comms",
        "create-profile",
        "site-x",
        "--region",
        "EMSOU",
        "--kind",
        "adverts",
        "--column",
        "number=Phone",
        "--column",
        "advert_id = Ad Ref",
        "--separator",
        ";",
        "--time-format",
        "%d/%m/%Y %H:%M",
    )
    assert created.exit_code == 0, created.output
    request = fake.call("CreateMappingProfile").request
    assert (request.parent, request.profile_id, request.profile.kind) == (
        "regions/EMSOU",
        "site-x",
        res.DATASET_KIND_ADVERTS,
    )
    assert dict(request.profile.columns) == {"number": "Phone", "advert_id": "Ad Ref"}
    assert (request.profile.separator, request.profile.time_format) == (";", "%d/%m/%Y %H:%M")
    assert "kind:" in created.stdout and "adverts" in created.stdout
    bad = toex(run, comms, "comms", "create-profile", "x", "--region", "EMSOU", "--column", "number")
    assert bad.exit_code == 2 and "expected NAME=VALUE" in bad.stderr

    fake.answers["CreateMappingProfile"] = _bad_request("profile.columns[advert_id]", "required for adverts")
    refused = toex(
        run,
        comms,
        "comms",
        "create-profile",
        "y",
        "--region",
        "EMSOU",
        "--kind",
        "adverts",
        "--column",
        "number=P",
    )
    assert refused.exit_code == 1 and "profile.columns[advert_id]: required for adverts" in refused.stderr


def test_import_adverts_help_explains_profiles(run: Callable[..., Result], comms: Comms) -> None:
    shown = toex(run, comms, "comms", "import-adverts", "--help")
    assert "--profile" in shown.stdout and "scraped-adverts" in shown.stdout
    assert "--kind" in toex(run, comms, "comms", "create-profile", "--help").stdout


def test_import_with_a_job_and_json_output(run: Callable[..., Result], comms: Comms, tmp_path: Path) -> None:
    fake, _ = comms
    src = tmp_path / "anpr.csv"
    src.write_text("vrm,camera_id,read_time\nAB12CDE,CAM-1,2024-03-04T09:00:00Z\n")
    fake.answers["ImportAnpr"] = pb.ImportAnprResponse(
        dataset=a_dataset(kind=res.DATASET_KIND_ANPR), already_imported=True
    )
    result = toex(
        run,
        comms,
        "comms",
        "import-anpr",
        str(src),
        "--region",
        "EMSOU",
        "--job",
        "EMSOU/j1",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    assert fake.call("ImportAnpr").request[0].header.job == "regions/EMSOU/jobs/j1"
    assert json.loads(result.stdout)["already_imported"] is True
    # the purpose given wins over the job
    assert fake.call("ImportAnpr").metadata["x-toex-purpose"] == "Op Kestrel"


def test_a_command_naming_a_job_works_under_it_when_no_purpose_is_given(
    run: Callable[..., Result], comms: Comms, tmp_path: Path
) -> None:
    fake, _ = comms
    src = tmp_path / "anpr.csv"
    src.write_text("vrm,camera_id,read_time\nAB12CDE,CAM-1,2024-03-04T09:00:00Z\n")
    fake.answers["ImportAnpr"] = pb.ImportAnprResponse(dataset=a_dataset(kind=res.DATASET_KIND_ANPR))
    args = ("comms", "import-anpr", str(src), "--region", "EMSOU", "--job", "EMSOU/j1")
    result = toex(run, comms, *args, purpose=None)
    assert result.exit_code == 0, result.output
    # what a job's assignee of another region needs to reach the job's material
    assert fake.call("ImportAnpr").metadata["x-toex-purpose"] == "regions/EMSOU/jobs/j1"


def test_a_refused_import_names_the_option_to_fix(
    run: Callable[..., Result], comms: Comms, tmp_path: Path
) -> None:
    fake, _ = comms
    src = tmp_path / "calls.csv"
    src.write_text("nothing useful\n")
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="header.parent", description="not your region")
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad)
    fake.answers["ImportCdr"] = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message="invalid request", details=[detail]
    )
    result = toex(run, comms, "comms", "import-cdr", str(src), "--region", "ERSOU")
    assert result.exit_code == 1
    assert "INVALID_ARGUMENT: invalid request" in result.stderr
    assert "header.parent (--region): not your region" in result.stderr


def test_common_contacts_sends_targets_window_and_purpose(
    run: Callable[..., Result], comms: Comms, tmp_path: Path
) -> None:
    fake, _ = comms
    targets = tmp_path / "targets.txt"
    targets.write_text("07700 900001\n# a comment line\n\n07700 900002  # trailing note\n")
    fake.answers["FindCommonContacts"] = pb.FindCommonContactsResponse(
        contacts=[
            pb.CommonContact(
                number="+447700900100",
                target_count=2,
                contact_count=8,
                ties=[tie("+447700900001", 4), tie("+447700900002", 4)],
            )
        ]
    )
    result = toex(
        run, comms,
        "comms", "common-contacts", "--region", "EMSOU", "--targets-file", str(targets),
        "--target", "+447700900003", "--since", "2024-03-04", "--until", "2024-03-04", "--min-targets", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    call = fake.call("FindCommonContacts")
    request = call.request
    assert list(request.targets) == ["+447700900003", "07700 900001", "07700 900002"]
    assert request.min_targets == 2
    assert request.scope.parent == "regions/EMSOU"
    # a bare date is the whole UTC day: from its first moment to the start of the next
    assert request.scope.start_time.ToDatetime(tzinfo=UTC) == datetime(2024, 3, 4, tzinfo=UTC)
    assert request.scope.end_time.ToDatetime(tzinfo=UTC) == datetime(2024, 3, 5, tzinfo=UTC)
    assert call.metadata["x-toex-purpose"] == "Op Kestrel"
    assert call.metadata["authorization"] == f"Bearer {TOKEN}"
    row = next(line for line in result.stdout.splitlines() if line.startswith("+447700900100"))
    assert row.split()[:3] == ["+447700900100", "2", "8"]
    assert "+447700900001 (4)" in row


def test_window_times_and_bad_dates(run: Callable[..., Result], comms: Comms) -> None:
    fake, _ = comms
    fake.answers["RankSuspects"] = pb.RankSuspectsResponse()
    result = toex(
        run, comms, "comms", "suspects", "--region", "EMSOU", "--target", "07700900001",
        "--since", "2024-03-04T10:30:00", "--until", "2024-03-04T12:00:00+01:00",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scope = fake.call("RankSuspects").request.scope
    assert scope.start_time.ToDatetime(tzinfo=UTC) == datetime(2024, 3, 4, 10, 30, tzinfo=UTC)
    assert scope.end_time.ToDatetime(tzinfo=UTC) == datetime(2024, 3, 4, 11, 0, tzinfo=UTC)
    bad = toex(run, comms, "comms", "suspects", "--region", "EMSOU", "--target", "1", "--since", "2024-02-30")
    assert bad.exit_code == 2 and "--since" in bad.stderr


def test_analyses_need_targets(run: Callable[..., Result], comms: Comms) -> None:
    result = toex(run, comms, "comms", "suspects", "--region", "EMSOU")
    assert result.exit_code == 2
    assert "--targets-file" in result.stderr


def test_suspects_table_and_json(run: Callable[..., Result], comms: Comms) -> None:
    fake, _ = comms
    fake.answers["RankSuspects"] = pb.RankSuspectsResponse(
        suspects=[
            pb.Suspect(
                number="+447700900100", score=34.6, target_count=3, reason="in contact with 3 of 5 targets"
            )
        ]
    )
    table = toex(
        run, comms, "comms", "suspects", "--region", "EMSOU", "--target", "07700900001", "--limit", "5"
    )
    assert table.exit_code == 0, table.output
    assert fake.call("RankSuspects").request.limit == 5
    assert "+447700900100  34.6   in contact with 3 of 5 targets" in table.stdout
    as_json = toex(
        run, comms, "comms", "suspects", "--region", "EMSOU", "--target", "07700900001", "--format", "json"
    )
    assert json.loads(as_json.stdout)["suspects"][0]["number"] == "+447700900100"


def test_watchlist_add_reports_new_contacts(run: Callable[..., Result], comms: Comms) -> None:
    fake, _ = comms
    fake.answers["AddWatchlistNumbers"] = pb.AddWatchlistNumbersResponse(
        watchlist=pb.Watchlist(name="regions/EMSOU/watchlists/victims", numbers=["+447700900301"]),
        contacts=[pb.WatchlistContact(number_a="+447700900300", number_b="+447700900301")],
    )
    result = toex(run, comms, "comms", "watchlist", "add", "victims", "07700 900301", "--region", "EMSOU")
    assert result.exit_code == 0, result.output
    request = fake.call("AddWatchlistNumbers").request
    assert (request.name, list(request.numbers)) == ("regions/EMSOU/watchlists/victims", ["07700 900301"])
    assert "1 new watchlist contacts detected" in result.stdout


def test_watchlist_add_takes_accounts_from_a_file_and_names_the_line_of_a_bad_one(
    run: Callable[..., Result], comms: Comms, tmp_path: Path
) -> None:
    fake, _ = comms
    fake.answers["AddWatchlistNumbers"] = pb.AddWatchlistNumbersResponse(
        watchlist=pb.Watchlist(
            name="regions/EMSOU/watchlists/suspects",
            numbers=["+447700900301"],
            accounts=["instagram:rosie.rx"],
        )
    )
    good = tmp_path / "suspects.txt"
    good.write_text("# suspects\n07700 900301\n\nhttps://www.instagram.com/Rosie.Rx/\n", encoding="utf-8")
    result = toex(
        run,
        comms,
        "comms",
        "watchlist",
        "add",
        "suspects",
        "--file",
        str(good),
        "--account",
        "tg:@someone",
        "--region",
        "EMSOU",
    )
    assert result.exit_code == 0, result.output
    request = fake.call("AddWatchlistNumbers").request
    assert list(request.numbers) == ["07700 900301"]
    assert list(request.accounts) == ["tg:@someone", "https://www.instagram.com/Rosie.Rx/"]
    assert "1 numbers, 1 accounts" in result.stdout

    bad = tmp_path / "bad.txt"
    bad.write_text("07700 900301\ninstagram:two words\n", encoding="utf-8")
    calls = len(fake.calls)
    refused = toex(
        run, comms, "comms", "watchlist", "add", "suspects", "--file", str(bad), "--region", "EMSOU"
    )
    assert refused.exit_code == 1
    assert "bad.txt: line 2:" in refused.stderr and "instagram handle" in refused.stderr
    assert len(fake.calls) == calls  # nothing sent


def test_export_writes_the_streamed_file(
    run: Callable[..., Result], comms: Comms, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, _ = comms
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10
    fake.answers["Export"] = [
        pb.ExportResponse(filename="../../network.png", content_type="image/png", chunk=png[:1000]),
        pb.ExportResponse(chunk=png[1000:]),
    ]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    result = toex(run, comms, "comms", "export", "png", "--region", "EMSOU", "--target", "07700900001")
    assert result.exit_code == 0, result.output
    request = fake.call("Export").request
    assert request.format == pb.EXPORT_FORMAT_PNG and list(request.targets) == ["07700900001"]
    # the suggested name is used, but only as a name in the current directory
    assert (tmp_path / "work" / "network.png").read_bytes() == png
    assert not (tmp_path / "network.png").exists()
    assert f"wrote network.png ({len(png)} bytes)" in result.stdout


def test_advert_networks_export_goes_through_export_with_the_same_query(
    run: Callable[..., Result], comms: Comms, tmp_path: Path
) -> None:
    fake, _ = comms
    fake.answers["Export"] = [pb.ExportResponse(filename="advert-networks-i2-links.csv", chunk=b"a,b\r\n")]
    out = tmp_path / "links.csv"
    result = toex(
        run,
        comms,
        "comms",
        "advert-networks",
        "--region",
        "EMSOU",
        "--dataset",
        "ADS1",
        "--min-adverts",
        "3",
        "--format",
        "i2",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    request = fake.call("Export").request
    assert request.format == pb.EXPORT_FORMAT_ADVERT_NETWORKS_I2_LINK_CSV
    assert list(request.advert_networks.scope.datasets) == ["regions/EMSOU/datasets/ADS1"]
    assert request.advert_networks.min_adverts == 3
    assert out.read_bytes() == b"a,b\r\n"
    assert not [c for c in fake.calls if c.method == "FindAdvertNetworks"]


def test_a_failed_export_leaves_no_partial_file(
    run: Callable[..., Result], comms: Comms, tmp_path: Path
) -> None:
    fake, _ = comms

    def half_then_fail(request: Message) -> Iterator[Message]:
        yield pb.ExportResponse(filename="network.svg", chunk=b"<svg")
        raise RuntimeError("the renderer fell over")

    fake.answers["Export"] = half_then_fail
    out = tmp_path / "net.svg"
    result = toex(
        run, comms, "comms", "export", "svg", "--region", "EMSOU", "--target", "07700900001", "-o", str(out)
    )
    assert result.exit_code == 1
    assert not out.exists()


def test_advert_networks_sends_the_scope_and_shows_ranked_networks(
    run: Callable[..., Result], comms: Comms
) -> None:
    fake, _ = comms
    fake.answers["FindAdvertNetworks"] = pb.FindAdvertNetworksResponse(
        networks=[
            pb.AdvertNetwork(
                network_id="an-1",
                minor=True,
                score=100,
                advert_count=2,
                numbers=["+447700900401", "+447700900402"],
                indicators=[pb.AdvertNetworkIndicator(code="child", points=100, text="claimed age 16")],
                adverts=[
                    pb.AdvertMembership(advert_id="b2", reasons=["image like advert b1 (1 bits apart)"])
                ],
                accounts=["instagram:some.name"],
            ),
            pb.AdvertNetwork(
                network_id="an-2",
                score=15,
                advert_count=3,
                numbers=["+447700900301"],
                movements=[pb.AdvertNetworkStop(location="Derby"), pb.AdvertNetworkStop(location="Lincoln")],
            ),
        ]
    )
    result = toex(
        run, comms,
        "comms", "advert-networks", "--region", "EMSOU", "--dataset", "abc",
        "--call-dataset", "def", "--min-numbers", "3", "--why",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    request = fake.call("FindAdvertNetworks").request
    assert request.scope.parent == "regions/EMSOU"
    assert list(request.scope.datasets) == ["regions/EMSOU/datasets/abc"]
    assert list(request.call_datasets) == ["regions/EMSOU/datasets/def"]
    assert (request.min_adverts, request.min_numbers, request.limit) == (2, 3, 100)
    lines = result.stdout.splitlines()
    first = next(line for line in lines if "an-1" in line)
    assert first.split()[:5] == ["1", "an-1", "CHILD", "100", "2"]
    assert "Derby -> Lincoln" in next(line for line in lines if "an-2" in line)
    assert "  b2: image like advert b1 (1 bits apart)" in lines
    assert "  accounts: instagram:some.name" in lines
