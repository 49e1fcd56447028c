"""Each analysis over small generated data with known answers."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from toex_comms import demo
from toex_comms.adapters import exports, ingest
from toex_comms.domain import analysis
from toex_comms.domain.identifiers import BadIdentifier, normalise_number, normalise_vrm, parse_number_key
from toex_comms.domain.profiles import BUILTIN_PROFILES

T = [parse_number_key(n) for n in demo.DEMO_TARGETS]


def n(i: int) -> int:
    return 447700900000 + i


@pytest.fixture
def cdr(tmp_path: Path) -> pl.LazyFrame:
    src = demo.write_demo_cdr(tmp_path / "cdr.csv")
    ingest.ingest_cdr(src, tmp_path / "out", BUILTIN_PROFILES["canonical"], batch_rows=5)
    return pl.scan_parquet(sorted((tmp_path / "out").glob("rows-*.parquet")))


@pytest.fixture
def anpr(tmp_path: Path) -> pl.LazyFrame:
    src = demo.write_demo_anpr(tmp_path / "anpr.csv")
    ingest.ingest_anpr(src, tmp_path / "anpr")
    return pl.scan_parquet(sorted((tmp_path / "anpr").glob("rows-*.parquet")))


def test_numbers_in_any_common_format_normalise_to_e164() -> None:
    for raw in ("07700 900123", "+44 7700 900123", "0044 7700 900123", "(07700) 900-123"):
        assert normalise_number(raw) == "+447700900123"
    with pytest.raises(BadIdentifier):
        normalise_number("12ab")
    assert normalise_vrm(" ab12 cde ") == "AB12CDE"
    with pytest.raises(BadIdentifier):
        normalise_vrm("!")


def test_common_contacts(cdr: pl.LazyFrame) -> None:
    found = analysis.common_contacts(cdr, T, min_targets=2)
    assert [(c.number, c.target_count, c.contacts) for c in found] == [(n(100), 3, 9), (n(101), 2, 2)]
    assert [t.other for t in found[0].ties] == [n(1), n(2), n(3)]
    with_targets = analysis.common_contacts(cdr, T, min_targets=2, include_targets=True)
    # 001 is itself a target in contact with two other targets (002 and 005)
    assert [(c.number, c.target, c.target_count) for c in with_targets if c.target] == [(n(1), True, 2)]
    assert analysis.common_contacts(cdr, T, min_targets=3)[0].number == n(100)


def test_suspects_are_ranked_with_reasons(cdr: pl.LazyFrame) -> None:
    found = analysis.rank_suspects(cdr, T)
    assert [s.number for s in found[:3]] == [n(100), n(101), n(200)]
    assert found[0].score == analysis.suspect_score(3, 9, 4 * 120 + 60)
    assert "3 of 5 targets" in found[0].reason and "+447700900001: 4 contacts" in found[0].reason
    assert all(s.number not in T for s in found)


def test_contact_network_weights(cdr: pl.LazyFrame) -> None:
    net = analysis.contact_network(cdr, T)
    edges = {(e.a, e.b): e for e in net.edges}
    e = edges[(n(2), n(100))]
    assert (e.calls, e.sms, e.contacts, e.duration) == (0, 4, 4, 0)
    assert edges[(n(4), n(200))].duration == 1200
    assert (n(300), n(301)) not in edges  # no target involved
    assert analysis.contact_network(cdr, T, min_contacts=4).edges[0].contacts == 4


def test_target_profile(cdr: pl.LazyFrame) -> None:
    p = analysis.target_profile(cdr, n(1))
    assert p.events == 8
    assert p.top[0].other == n(100) and p.top[0].contacts == 4
    assert sum(p.by_hour) == 8 and p.by_weekday[0] == 8  # all on Monday
    assert p.by_hour[9] == 4  # 09:00 UTC in March is 09:00 in London
    assert p.imeis == ["35693803564380"]


def test_colocation(cdr: pl.LazyFrame) -> None:
    found = analysis.colocations(cdr, [n(1)], window_seconds=300)
    assert [(c.a, c.b, c.occasions, c.cells, c.in_contact) for c in found] == [
        (n(1), n(150), 2, ["C-17"], False)
    ]
    assert analysis.colocations(cdr, [n(1)], window_seconds=120) == []


def test_watchlist_contacts(cdr: pl.LazyFrame) -> None:
    found = analysis.watchlist_contacts(cdr, {n(300): ["rso"], n(301): ["victims"], n(100): ["victims"]})
    rows = found.to_dicts()
    assert [
        (r["list_a"], r["number_a"], r["list_b"], r["number_b"], r["contacts"], r["duration"]) for r in rows
    ] == [("rso", n(300), "victims", n(301), 3, 900)]


def test_convoys_and_travel(anpr: pl.LazyFrame) -> None:
    found = analysis.convoys(anpr, window_seconds=60, min_occasions=3)
    assert [(c.vrm_a, c.vrm_b, c.occasions, c.days, c.median_gap) for c in found] == [
        ("AB12CDE", "XY34ZZZ", 9, 3, 45)
    ]
    assert analysis.convoys(anpr, window_seconds=30) == []
    assert analysis.convoys(anpr, min_occasions=10) == []
    pattern = analysis.travel_pattern(anpr, "AB12CDE")
    assert pattern.reads == 9
    assert pattern.locations[0][2] == 3
    assert ("CAM-A1", "CAM-M6-12", 3, 1200) in pattern.routes


def test_ingest_rejects_rows_with_reasons_and_keeps_the_rest(tmp_path: Path) -> None:
    src = tmp_path / "mixed.csv"
    src.write_bytes(
        b"start_time,duration,calling_number,called_number,event_type\n"
        b"2024-03-01T10:00:00Z,60,07700900001,07700900002,voice\n"
        b"2024-02-30T10:00:00Z,60,07700900001,07700900002,voice\n"
        b"2024-03-01T10:00:00Z,60,12ab,07700900002,voice\n"
        b"2024-03-01T10:00:00Z,1:02:03,07700900001,07700900002,fax\n"
        b"2024-03-31 01:30:00,60,07700900001,07700900002,voice\n"
        b"2024-03-01T10:00:00Z,-5,07700900001,07700900002,voice\n"
        b"2024-03-01T10:00:00Z,0:30,07700900001,07700900002,\xff\xfe\n"
        b"2024-03-01 10:00:00,00:01:00,07700900001,07700900002,SMS\n"
    )
    result = ingest.ingest_cdr(src, tmp_path / "out", BUILTIN_PROFILES["canonical"], batch_rows=3)
    assert (result.rows_read, result.rows_accepted, result.rows_rejected) == (8, 2, 6)
    reasons = {line: reason for line, reason, _ in result.sample_rejections}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8]
    assert "start_time" in reasons[3] and "calling_number" in reasons[4] and "fax" in reasons[5]
    assert "start_time" in reasons[6]  # does not exist in Europe/London (clocks went forward)
    assert "duration" in reasons[7] and "encoding" in reasons[8]


def test_upload_writer_transcodes_and_hashes(tmp_path: Path) -> None:
    text = "start_time,calling_number,called_number\n2024-03-01T10:00:00Z,07700900001,07700900002\n"
    writer = ingest.UploadWriter(tmp_path / "u.csv", "", 1 << 20)
    raw = text.encode("utf-16")
    for i in range(0, len(raw), 7):
        writer.write(raw[i : i + 7])
    import hashlib

    assert writer.close() == hashlib.sha256(raw).hexdigest()
    assert (tmp_path / "u.csv").read_text(encoding="utf-8") == text
    too_big = ingest.UploadWriter(tmp_path / "v.csv", "", 10)
    with pytest.raises(ingest.FileProblem):
        too_big.write(b"x" * 11)


def test_profile_with_other_column_names(tmp_path: Path) -> None:
    src = tmp_path / "b.csv"
    src.write_text(
        "START;END;A_PARTY;B_PARTY;SERVICE;CELL\n20240301100000;20240301100130;07700900001;07700900002;TEL;C1\n"
    )
    result = ingest.ingest_cdr(src, tmp_path / "out", BUILTIN_PROFILES["uk-network-b"])
    assert result.rows_accepted == 1
    row = pl.read_parquet(next((tmp_path / "out").glob("rows-*.parquet"))).row(0, named=True)
    assert row["duration"] == 90 and row["kind"] == 1 and row["a_cell"] == "C1"


def test_exports_neutralise_formulas_and_render(cdr: pl.LazyFrame, tmp_path: Path) -> None:
    assert exports.neutralise("=cmd|' /C calc'!A0") == "'=cmd|' /C calc'!A0"
    assert exports.neutralise("+447700900001") == "'+447700900001"
    assert exports.neutralise("Leicester") == "Leicester"
    net = analysis.contact_network(cdr, T)
    assert b"<graphml" in exports.graphml(net)
    table = exports.i2_link_table(net, {n(1): "=HYPERLINK(evil)"}).decode("utf-8-sig").splitlines()
    assert table[0].startswith("Entity1 Identity")
    import csv

    cells = [cell for row in csv.reader(table[1:]) for cell in row]
    assert any("=HYPERLINK" in cell for cell in cells)
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@")]
    assert exports.picture(net, "svg").startswith(b"<?xml")
    exports.index_csv([("=1+1", "", 1, 1, 0, 0, "", "")], tmp_path / "i.csv")
    assert (tmp_path / "i.csv").read_text(encoding="utf-8-sig").splitlines()[1].startswith("'=1+1")
    exports.index_xlsx([("=1+1", "x", 1, 1, 0, 0, "", "")], tmp_path / "i.xlsx")
    import zipfile

    sheet = zipfile.ZipFile(tmp_path / "i.xlsx").read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in sheet  # written as a string, never a formula
