"""Mapping profiles for advert files: validation against the canonical advert columns, files read
through them (renamed headers, another separator, a time format), and imports refusing a profile
of the other kind."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from toex.comms.v1 import comms_pb2 as pb
from toex.comms.v1 import resources_pb2 as res
from toex_comms.adapters import ingest, mapping
from toex_comms.domain import commands
from toex_comms.domain.model import DatasetKind, FileProblem
from toex_comms.domain.profiles import BUILTIN_PROFILES, MappingProfile
from toex_comms.service_layer import handlers
from toex_kernel.errors import InvalidArgument
from toex_kernel.regions import Region

from .fakes import FakeCommsUnitOfWork, FakeDatasetStore, advert_rows
from .test_handlers import ANALYST, NOW, T1, calls, import_cdr

ADVERTS = DatasetKind.ADVERTS
SITE_X = MappingProfile(
    "site-x",
    {
        "number": "Phone",
        "advert_id": "Ad Ref",
        "site": "Website",
        "date": "Posted",
        "location": "Town",
        "text": "Body",
        "age": "Age (claimed)",
        "price": "Rate",
    },
    time_format="%d/%m/%Y %H:%M",
    separator=";",
    kind=ADVERTS,
)


def problems(profile: MappingProfile) -> dict[str, str]:
    return dict(profile.problems())


# ---------------------------------------------------------------- validation


def test_an_advert_profile_is_checked_against_the_advert_columns() -> None:
    assert problems(SITE_X) == {}
    assert problems(BUILTIN_PROFILES["canonical-adverts"]) == {}
    assert problems(BUILTIN_PROFILES["scraped-adverts"]) == {}
    bad = dataclasses.replace(
        SITE_X,
        columns={"number": "Phone", "start_time": "When", "advert_id": " "},
        event_types={"tel": "voice"},
    )
    found = problems(bad)
    assert set(found) == {
        "profile.columns[start_time]",
        "profile.columns[advert_id]",
        "profile.event_types[tel]",
    }
    assert found["profile.columns[start_time]"].startswith(
        "not one of the adverts columns: number, advert_id"
    )
    assert found["profile.columns[advert_id]"] == "required for adverts"
    assert "only call data has event types" in found["profile.event_types[tel]"]


def test_a_call_data_profile_still_refuses_advert_columns_and_anpr_has_none() -> None:
    cdr = MappingProfile(
        "calls", {"start_time": "t", "calling_number": "a", "called_number": "b", "advert_id": "x"}
    )
    assert list(problems(cdr)) == ["profile.columns[advert_id]"]
    assert list(problems(dataclasses.replace(SITE_X, kind=DatasetKind.ANPR))) == ["profile.kind"]


async def test_create_profile_answers_every_bad_field_and_stores_a_good_one_with_its_kind() -> None:
    uow = FakeCommsUnitOfWork()
    deps = handlers.Deps(uow=lambda: uow, store=FakeDatasetStore(), exporter=None, clock=lambda: NOW)  # type: ignore[arg-type,return-value]
    bad = dataclasses.replace(SITE_X, columns={"phone_number": "Phone"})
    with pytest.raises(InvalidArgument) as err:
        await handlers.create_profile(commands.CreateMappingProfile(ANALYST, Region.EMSOU, bad), deps)
    assert {v.field for v in err.value.violations} == {
        "profile.columns[phone_number]",
        "profile.columns[number]",
        "profile.columns[advert_id]",
    }
    with pytest.raises(InvalidArgument) as err:
        builtin = dataclasses.replace(SITE_X, profile_id="canonical-adverts")
        await handlers.create_profile(commands.CreateMappingProfile(ANALYST, Region.EMSOU, builtin), deps)
    assert [v.field for v in err.value.violations] == ["profile_id"]

    await handlers.create_profile(commands.CreateMappingProfile(ANALYST, Region.EMSOU, SITE_X), deps)
    adverts_only = await handlers.list_profiles(
        commands.ListMappingProfiles(ANALYST, Region.EMSOU, kind=ADVERTS), deps
    )
    assert [p.profile_id for p in adverts_only] == ["canonical-adverts", "scraped-adverts", "site-x"]
    every = await handlers.list_profiles(commands.ListMappingProfiles(ANALYST, Region.EMSOU), deps)
    assert [(p.profile_id, p.kind) for p in every][:3] == [
        ("canonical", DatasetKind.CDR),
        ("uk-network-a", DatasetKind.CDR),
        ("uk-network-b", DatasetKind.CDR),
    ]
    assert ("site-x", ADVERTS) in [(p.profile_id, p.kind) for p in every]


def test_a_profile_without_a_kind_is_call_data_and_the_kind_goes_both_ways() -> None:
    unspecified = pb.MappingProfile(columns={"start_time": "t"})
    assert mapping.profile_from_proto("old", unspecified).kind is DatasetKind.CDR
    adverts = pb.MappingProfile(columns={"number": "phone"}, kind=res.DATASET_KIND_ADVERTS)
    assert mapping.profile_from_proto("new", adverts).kind is ADVERTS
    assert mapping.profile_to_proto(SITE_X, "EMSOU").kind == res.DATASET_KIND_ADVERTS
    assert mapping.profile_to_proto(BUILTIN_PROFILES["canonical"], "EMSOU").kind == res.DATASET_KIND_CDR


# ---------------------------------------------------------------- files read through a profile


def read(
    tmp_path: Path, text: str, profile: MappingProfile | None
) -> tuple[pl.DataFrame, list[tuple[int, str]]]:
    src = tmp_path / "adverts.csv"
    src.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    result = ingest.ingest_adverts(src, out, profile)
    rows = pl.read_parquet(sorted(out.glob("rows-*.parquet")))
    parts = sorted(out.glob("rejections-*.parquet"))
    rejected = [(r["line"], r["reason"]) for r in pl.read_parquet(parts).to_dicts()] if parts else []
    assert result.rows_rejected == len(rejected)
    return rows, rejected


def test_renamed_headers_another_separator_and_time_format_read_through_a_profile(tmp_path: Path) -> None:
    rows, rejected = read(
        tmp_path,
        "Ad Ref;Phone;Website;Posted;Town;Body;Age (claimed);Rate\n"
        "x1;07700 900001;site-x;04/03/2025 21:30;Derby;new in town, call me;22;£120\n"
        "x2;07700 900002;site-x;04/03/2025 22:00;Leicester;hi;250;80\n"
        "x3;nonsense;site-x;05/03/2025 09:15;Derby;hi;;\n"
        "x4;07700 900004;site-x;2025-03-05;Derby;;19;\n",
        SITE_X,
    )
    assert rejected == [(3, "age: not valid: 250"), (4, "number: not a phone number: nonsense")]
    got = rows.sort("advert_id").select(
        "advert_id", "number", "site", "posted", "location", "text", "age", "price"
    )
    assert got.rows() == [
        # 21:30 in London (GMT in March) is 21:30 UTC; the text keeps its comma
        (
            "x1",
            447700900001,
            "site-x",
            datetime(2025, 3, 4, 21, 30, tzinfo=UTC),
            "Derby",
            "new in town, call me",
            22,
            120.0,
        ),
        # a bare ISO date still reads whatever the profile's format
        ("x4", 447700900004, "site-x", datetime(2025, 3, 5, 0, 0, tzinfo=UTC), "Derby", None, 19, None),
    ]


def test_the_profile_zone_and_default_country_apply(tmp_path: Path) -> None:
    paris = dataclasses.replace(
        SITE_X,
        columns={"number": "Phone", "advert_id": "Ad Ref", "date": "Posted"},
        time_zone="Europe/Paris",
        default_country="FR",
    )
    rows, rejected = read(tmp_path, "Phone;Ad Ref;Posted\n06 12 34 56 78;p1;04/03/2025 21:30\n", paris)
    assert rejected == []
    assert rows.select("number", "posted").row(0) == (33612345678, datetime(2025, 3, 4, 20, 30, tzinfo=UTC))


def test_the_built_in_scraped_profile_reads_a_scraper_export(tmp_path: Path) -> None:
    rows, rejected = read(
        tmp_path,
        "ad_id,phone,website,first_seen,last_seen,city,description,phash,image_file,display_name,age,rate,social\n"
        "s1,07700 900001,vivastreet,2025-03-01,2025-03-04T10:00:00Z,Derby,hello,8f373714acfcf4d0,a.jpg,Lola,21,100,"
        "https://www.instagram.com/lola.x/\n",
        BUILTIN_PROFILES["scraped-adverts"],
    )
    assert rejected == []
    row = rows.row(0, named=True)
    assert (row["advert_id"], row["number"], row["site"], row["name"], row["image_hash"], row["account"]) == (
        "s1",
        447700900001,
        "vivastreet",
        "Lola",
        0x8F373714ACFCF4D0,
        "instagram:lola.x",
    )
    assert row["seen"] == datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


def test_a_file_lacking_the_profiles_required_column_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileProblem, match=r"number \(column 'Phone'\)"):
        read(tmp_path, "number;Ad Ref\n07700 900001;x1\n", SITE_X)


# ---------------------------------------------------------------- imports choose by kind


async def test_an_import_reads_through_a_profile_of_its_own_kind_and_refuses_the_other() -> None:
    uow, store = FakeCommsUnitOfWork(), FakeDatasetStore()
    deps = handlers.Deps(uow=lambda: uow, store=store, exporter=None, clock=lambda: NOW)  # type: ignore[arg-type,return-value]
    await handlers.create_profile(commands.CreateMappingProfile(ANALYST, Region.EMSOU, SITE_X), deps)
    adverts = store.readable(b"adverts", advert_rows([(T1, "a1", "site", NOW, "Leeds", "", 2)]))
    cdr = store.readable(b"calls", calls((T1, T1 + 1)))

    def advert_import(profile: str) -> commands.ImportFile:
        return dataclasses.replace(import_cdr(data=adverts), kind=ADVERTS, profile=profile)

    default = await handlers.import_file(advert_import(""), deps)
    assert default.dataset.profile == "canonical-adverts"
    assert store.read_through[default.dataset.id] == BUILTIN_PROFILES["canonical-adverts"]

    for wrong in ("canonical", "uk-network-b"):
        with pytest.raises(InvalidArgument) as err:
            await handlers.import_file(advert_import(wrong), deps)  # the same bytes: refused all the same
        [violation] = err.value.violations
        assert violation.field == "header.profile"
        assert f"'{wrong}' reads call data, not adverts" in violation.description
    with pytest.raises(InvalidArgument) as err:
        await handlers.import_file(dataclasses.replace(import_cdr(data=cdr), profile="site-x"), deps)
    assert "'site-x' reads adverts, not call data" in err.value.violations[0].description
    with pytest.raises(InvalidArgument, match="no mapping profile 'nope'"):
        await handlers.import_file(advert_import("nope"), deps)

    store.readable(b"more adverts", advert_rows([(T1, "a2", "site", NOW, "Leeds", "", 2)]))
    named = await handlers.import_file(
        dataclasses.replace(import_cdr(data=b"more adverts"), kind=ADVERTS, profile="site-x"), deps
    )
    assert named.dataset.profile == "site-x"
    assert store.read_through[named.dataset.id] == SITE_X
