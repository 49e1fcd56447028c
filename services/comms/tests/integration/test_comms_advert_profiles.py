"""Advert mapping profiles over gRPC: an advert profile stored for a region, a scraped file with
its own headers and separator imported through it into adverts and a network, rejections by line,
and a profile of the other kind refused both ways."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from toex.comms.v1 import comms_pb2 as pb
from toex.comms.v1 import resources_pb2 as res
from toex_common.migrations import upgrade
from toex_comms.__main__ import migrations_dir

from .conftest import Running, upload
from .test_comms_accounts import field_violations

pytestmark = pytest.mark.integration

ANALYST, OTHER_REGION = "analyst.emsou", "analyst.ersou"


async def test_adverts_imported_through_a_stored_advert_profile(comms: Running) -> None:
    suffix = uuid.uuid4().hex[:8]
    profile_id = f"site-x-{suffix}"
    created = await comms.stub.CreateMappingProfile(
        pb.CreateMappingProfileRequest(
            parent="regions/EMSOU",
            profile_id=profile_id,
            profile=pb.MappingProfile(
                kind=res.DATASET_KIND_ADVERTS,
                columns={
                    "number": "Phone",
                    "advert_id": "Ad Ref",
                    "site": "Website",
                    "date": "Posted",
                    "location": "Town",
                    "image_hash": "Photo Hash",
                    "age": "Age",
                },
                separator=";",
                time_format="%d/%m/%Y %H:%M",
            ),
        ),
        metadata=comms.md(ANALYST),
    )
    assert created.profile.name == f"regions/EMSOU/mappingProfiles/{profile_id}"
    assert created.profile.kind == res.DATASET_KIND_ADVERTS

    listed = await comms.stub.ListMappingProfiles(
        pb.ListMappingProfilesRequest(parent="regions/EMSOU", kind=res.DATASET_KIND_ADVERTS),
        metadata=comms.md(ANALYST),
    )
    names = [p.name for p in listed.profiles]
    assert names[:2] == ["mappingProfiles/canonical-adverts", "mappingProfiles/scraped-adverts"]
    assert created.profile.name in names
    assert {p.kind for p in listed.profiles} == {res.DATASET_KIND_ADVERTS}
    every = await comms.stub.ListMappingProfiles(
        pb.ListMappingProfilesRequest(parent="regions/EMSOU"), metadata=comms.md(ANALYST)
    )
    kinds = {p.name: p.kind for p in every.profiles}
    assert kinds["mappingProfiles/canonical"] == res.DATASET_KIND_CDR
    assert kinds[created.profile.name] == res.DATASET_KIND_ADVERTS

    # Two numbers under the same photo: one network. Line 4's number is not one.
    base = 900_000 + int(suffix, 16) % 998
    n1, n2 = f"07700 {base}", f"07700 {base + 1}"
    data = (
        "Ad Ref;Phone;Website;Posted;Town;Photo Hash;Age\n"
        f"a1-{suffix};{n1};site-x;04/03/2025 21:30;Derby;8f373714acfcf4d0;21\n"
        f"a2-{suffix};{n2};site-x;05/03/2025 10:00;Leicester;8f373714acfcf4d0;22\n"
        f"a3-{suffix};not a number;site-x;05/03/2025 11:00;Leicester;;22\n"
    ).encode()
    imported = await comms.stub.ImportAdverts(
        upload(pb.ImportAdvertsRequest, "regions/EMSOU", data, profile=profile_id),
        metadata=comms.md(ANALYST),
    )
    dataset = imported.dataset
    assert (dataset.profile, dataset.rows_accepted, dataset.rows_rejected) == (profile_id, 2, 1)
    assert [(r.line, r.reason) for r in imported.rejections] == [
        (4, "number: not a phone number: not a number")
    ]
    assert dataset.first_record_time.ToJsonString() == "2025-03-04T21:30:00Z"

    found = await comms.stub.FindAdvertNetworks(
        pb.FindAdvertNetworksRequest(scope=pb.AnalysisScope(parent="regions/EMSOU", datasets=[dataset.name])),
        metadata=comms.md(ANALYST),
    )
    [network] = found.networks
    assert sorted(a.advert_id for a in network.adverts) == [f"a1-{suffix}", f"a2-{suffix}"]
    assert [m.location for m in network.movements] == ["Derby", "Leicester"]

    # The stored advert profile given to a call data import, and a call data profile to an advert
    # import, are refused naming the header's profile.
    for call, kind, profile, words in (
        (comms.stub.ImportCdr, pb.ImportCdrRequest, profile_id, "reads adverts, not call data"),
        (comms.stub.ImportAdverts, pb.ImportAdvertsRequest, "uk-network-b", "reads call data, not adverts"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(upload(kind, "regions/EMSOU", data, profile=profile), metadata=comms.md(ANALYST))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert words in field_violations(err.value)["header.profile"]


async def test_a_bad_advert_profile_answers_each_field_and_another_region_is_refused(comms: Running) -> None:
    profile_id = f"bad-{uuid.uuid4().hex[:8]}"
    bad = pb.MappingProfile(
        kind=res.DATASET_KIND_ADVERTS,
        columns={"phone_number": "Phone", "advert_id": "Ad Ref"},
        event_types={"tel": "voice"},
        separator=";;",
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await comms.stub.CreateMappingProfile(
            pb.CreateMappingProfileRequest(parent="regions/EMSOU", profile_id=profile_id, profile=bad),
            metadata=comms.md(ANALYST),
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(err.value)) == {
        "profile.columns[phone_number]",
        "profile.columns[number]",
        "profile.event_types[tel]",
        "profile.separator",
    }

    good = pb.MappingProfile(
        kind=res.DATASET_KIND_ADVERTS, columns={"number": "Phone", "advert_id": "Ad Ref"}
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await comms.stub.CreateMappingProfile(
            pb.CreateMappingProfileRequest(parent="regions/EMSOU", profile_id=profile_id, profile=good),
            metadata=comms.md(OTHER_REGION),
        )
    assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)
    listed = await comms.stub.ListMappingProfiles(
        pb.ListMappingProfilesRequest(parent="regions/EMSOU", kind=res.DATASET_KIND_ADVERTS),
        metadata=comms.md(ANALYST),
    )
    assert f"regions/EMSOU/mappingProfiles/{profile_id}" not in [p.name for p in listed.profiles]


async def test_profiles_stored_before_the_kind_are_call_data(database: str) -> None:
    """Migration 0007 on a database of 0006 (a profile stored, no kind column) gives it kind cdr."""
    await asyncio.to_thread(upgrade, database, migrations_dir())
    engine = create_async_engine(database)
    try:
        async with engine.begin() as conn:  # as 0006 left it
            await conn.execute(text("ALTER TABLE mapping_profiles DROP COLUMN kind"))
            await conn.execute(text("UPDATE alembic_version SET version_num = '0006'"))
            await conn.execute(
                text(
                    "INSERT INTO mapping_profiles (region, profile_id, body, created_by, created_at) "
                    """VALUES ('EMSOU', 'old', '{"columns": {}}', 'someone', now())"""
                )
            )
        await asyncio.to_thread(upgrade, database, migrations_dir())
        async with engine.connect() as conn:
            kinds = (await conn.execute(text("SELECT profile_id, kind FROM mapping_profiles"))).all()
    finally:
        await engine.dispose()
    assert [tuple(k) for k in kinds] == [("old", "cdr")]
