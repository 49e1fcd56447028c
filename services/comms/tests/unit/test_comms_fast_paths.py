"""The import's and analyses' fast paths give exactly what the general paths give."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import phonenumbers
import polars as pl
import pytest
from toex_comms.adapters import ingest
from toex_comms.adapters.store import ParquetDatasetStore
from toex_comms.domain import analysis
from toex_comms.domain.commands import Scope
from toex_comms.domain.identifiers import CANONICAL_UK, NumberNormaliser, normalise_number
from toex_comms.domain.profiles import BUILTIN_PROFILES
from toex_comms.service_layer.handlers import whole_dataset_pairs


def _phonenumbers_e164(raw: str) -> str | None:
    try:
        parsed = phonenumbers.parse(raw, "GB")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def test_canonical_uk_numbers_are_what_phonenumbers_returns() -> None:
    """Every four-digit start of a ten-digit UK national number, several random endings each,
    plus the prefixes GB metadata strips when parsing (180020): phonenumbers gives each back
    unchanged and possible, so the normaliser may take it as it is."""
    rng = random.Random(3)
    sample = [f"+44{prefix}{rng.randrange(10**6):06d}" for prefix in range(1000, 10000) for _ in range(4)] + [
        f"+44180020{rng.randrange(10**4):04d}" for _ in range(500)
    ]
    sample += ["+441000000000", "+449999999999", "+447700900123"]
    assert all(CANONICAL_UK.fullmatch(s) for s in sample)
    mismatched = [s for s in sample if _phonenumbers_e164(s) != s]
    assert mismatched == []


def test_only_canonical_form_skips_phonenumbers() -> None:
    near_misses = [
        "+4407700900123",  # national prefix kept after the country code
        "+44 7700 900123",
        "+4477009001234",  # eleven digits
        "+44770090012",  # nine digits
        "+447700900123 ",
        "447700900123",
        "+١٤٤٧٧٠٠٩٠٠١٢٣",  # Arabic-Indic digits
        "+337700900123",
    ]
    assert not [s for s in near_misses if CANONICAL_UK.fullmatch(s)]
    fast, slow = NumberNormaliser(), NumberNormaliser()
    values = ["+447700900123", "07700 900123", "+447800000001", "12ab", *near_misses]
    fast.resolve(values)
    for raw in values:
        try:
            expected: int | None = int(normalise_number(raw).lstrip("+"))
        except ValueError:
            expected = None
        assert fast.keys[raw] == expected, raw
    slow.resolve(["12ab"])
    assert fast.errors["12ab"] == slow.errors["12ab"]


def _time_cases() -> list[str | None]:
    rng = random.Random(5)
    cases: list[str | None] = [
        "2024-03-01T10:00:00Z",
        " 2024-03-01T10:00:00Z ",
        "2024-03-01 10:00:00Z",
        "2024-03-01T10:00:00.250Z",
        "2024-03-01T10:00:00+01:00",
        "2024-03-01T10:00:00",
        "2024-03-31 01:30:00",  # does not exist in London
        "2024-10-27 01:30:00",  # exists twice in London
        "2024-02-30T10:00:00Z",
        "2024-13-01T10:00:00Z",
        "2024-03-01T24:00:00Z",
        "2024-03-01T23:59:60Z",
        "2024-3-1T10:00:00Z",
        "2024-03-01T10:00Z",
        "2024-03-01Z",
        "2024-03-01T10:00:00z",
        "2024-03-01T10:00:00ZZ",
        "T2024-03-01T10:00:00Z",
        "",
        "  ",
        None,
        "garbage",
    ]
    base = datetime(2000, 1, 1, tzinfo=UTC)
    for _ in range(2000):
        t = base + timedelta(seconds=rng.randrange(40 * 365 * 86400))
        cases.append(t.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return cases


def test_fast_time_parse_agrees_with_the_general_parse() -> None:
    frame = pl.DataFrame({"t": _time_cases()}, schema={"t": pl.String})
    general = frame.select(ingest._time_expr("t", "", "Europe/London").alias("v"))["v"]
    combined = ingest._with_fallback(
        frame,
        "v",
        ingest._fast_time_expr("t", ""),
        lambda name: ingest._time_expr(name, "", "Europe/London"),
        "t",
    )
    assert combined["t"].to_list() == frame["t"].to_list()  # the text is kept for the report
    assert combined["v"].to_list() == general.to_list()
    assert combined["v"].dtype == general.dtype
    assert combined["v"].null_count() > 0  # the general parse was needed and used


def test_fast_duration_agrees_with_the_general_parse() -> None:
    cases = ["60", " 60 ", "0", "-5", "+5", "007", "60.4", "60.6", "1:02:03", "0:30", "1:2", "x", "", None]
    cases += ["99999999999999999999", "9223372036854775807", "-9223372036854775808", "1e3"]
    cases += [str(2**53 - 1), str(2**53), str(2**53 + 1), str(-(2**53)), str(-(2**53) - 1)]
    cases += [str(random.Random(9).randrange(100000)) for _ in range(500)]
    frame = pl.DataFrame({"d": cases}, schema={"d": pl.String})
    general = frame.select(ingest._duration_expr("d").alias("v"))["v"]
    combined = ingest._with_fallback(frame, "v", ingest._fast_duration_expr("d"), ingest._duration_expr, "d")
    assert combined["v"].to_list() == general.to_list()


def test_clean_utf8_check(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"a,b\n1,2\n")
    accents = tmp_path / "accents.csv"
    accents.write_bytes(("a,b\n" + "é" * 5 + ",x\n").encode())
    invalid = tmp_path / "invalid.csv"
    invalid.write_bytes(b"a,b\n\xff\xfe,x\n")
    truncated = tmp_path / "truncated.csv"
    truncated.write_bytes(b"a,b\n1,\xc3")
    replacement = tmp_path / "replacement.csv"
    replacement.write_bytes("a,b\n\ufffd,x\n".encode())
    assert ingest._clean_utf8(plain)
    assert ingest._clean_utf8(accents, chunk=3)  # multi-byte characters split across reads
    assert not ingest._clean_utf8(invalid)
    assert not ingest._clean_utf8(truncated, chunk=2)
    assert not ingest._clean_utf8(replacement)
    # a two-byte character split across reads, then an ASCII read: still valid
    split = tmp_path / "split.csv"
    split.write_bytes(b"ab\xc3\xa9cdef\n")
    assert ingest._clean_utf8(split, chunk=3)


def test_rejected_rows_keep_their_text_as_read(tmp_path: Path) -> None:
    src = tmp_path / "r.csv"
    src.write_bytes(
        b"start_time,duration,calling_number,called_number,event_type\n"
        b"2024-03-01T10:00:00Z,-5,07700900001,07700900002,voice\n"
        b"2024-03-01T10:00:00Z,1:00:00,07700900001,07700900002,voice\n"
        b"2024-03-01T10:00:00Z,abc,+447700900001,07700900002,voice\n"
        b"2024-03-01T10:00:00Z,60,+447700900001,07700900002,voice,\xff\n"
    )
    result = ingest.ingest_cdr(src, tmp_path / "out", BUILTIN_PROFILES["canonical"])
    assert (result.rows_accepted, result.rows_rejected) == (2, 2)
    by_line = {line: (reason, raw) for line, reason, raw in result.sample_rejections}
    assert by_line[2] == (
        "duration: negative or longer than two days",
        "2024-03-01T10:00:00Z,-5,07700900001,07700900002,voice",
    )
    assert by_line[4][1].startswith("2024-03-01T10:00:00Z,abc,+447700900001")
    assert "duration: not a number" in by_line[4][0]
    # the extra trailing field is ignored; its bad byte is not in a read column
    assert 5 not in by_line
    row = pl.read_parquet(next((tmp_path / "out").glob("rows-*.parquet"))).row(0, named=True)
    assert (row["duration"], row["line"]) == (3600, 3)


def _random_rows(seed: int, n: int, numbers: list[int]) -> pl.DataFrame:
    rng = random.Random(seed)
    base = datetime(2024, 3, 1, tzinfo=UTC)
    rows = []
    for _ in range(n):
        a, b = rng.choice(numbers), rng.choice(numbers)
        rows.append(
            {
                "start": base + timedelta(seconds=rng.randrange(30 * 86400)),
                "duration": rng.randrange(600),
                "a": a,
                "b": b,
                "kind": rng.choice([1, 1, 2, 3]),
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "start": pl.Datetime("us", "UTC"),
            "duration": pl.Int32,
            "a": pl.Int64,
            "b": pl.Int64,
            "kind": pl.UInt8,
        },
    )


def test_pair_totals_answer_exactly_as_the_records_do() -> None:
    numbers = [447700900000 + i for i in range(60)]
    targets = numbers[:6]
    one, two = _random_rows(1, 4000, numbers), _random_rows(2, 3000, numbers)
    rows = pl.concat([one, two]).lazy()
    # two datasets, each with its own pair totals, as the store gives them
    pairs = pl.concat([analysis.pair_totals(one.lazy()), analysis.pair_totals(two.lazy())])

    def cc(found: list[analysis.CommonContact]) -> list[tuple[object, ...]]:
        return [(c.number, c.target, c.target_count, c.contacts, c.duration, c.ties) for c in found]

    for include in (False, True):
        for k in (1, 2, 4):
            assert cc(analysis.common_contacts(rows, targets, min_targets=k, include_targets=include)) == cc(
                analysis.common_contacts(rows, targets, min_targets=k, include_targets=include, pairs=pairs)
            )
    for degree in (0, 30):
        for limit in (1, 5, 100):
            raw = analysis.rank_suspects(rows, targets, limit=limit, max_degree=degree)
            fast = analysis.rank_suspects(rows, targets, limit=limit, max_degree=degree, pairs=pairs)
            assert [(s.number, s.score, s.reason, s.ties) for s in raw] == [
                (s.number, s.score, s.reason, s.ties) for s in fast
            ]
            if degree == 0:
                assert len(raw) == min(limit, len(numbers) - len(targets))
    for min_contacts in (1, 50):
        raw_net = analysis.contact_network(rows, targets, min_contacts=min_contacts, max_edges=40)
        fast_net = analysis.contact_network(
            rows, targets, min_contacts=min_contacts, max_edges=40, pairs=pairs
        )
        assert (raw_net.nodes, raw_net.edges) == (fast_net.nodes, fast_net.edges)


def test_suspect_shortlist_keeps_every_possible_top_score() -> None:
    # many numbers with equal scores: the exact order (score, then number) decides
    ties = pl.DataFrame(
        {
            "target": [1, 2] * 50,
            "other": [100 + i // 2 for i in range(100)],
            "contacts": [3] * 100,
            "duration": [60] * 100,
        }
    )
    kept = analysis._likely_top(ties, 5)
    assert kept["other"].n_unique() == 50


def test_import_writes_pair_totals_and_the_store_uses_them_for_whole_datasets(tmp_path: Path) -> None:
    store = ParquetDatasetStore(tmp_path / "data")
    src = tmp_path / "cdr.csv"
    src.write_text(
        "start_time,duration,calling_number,called_number\n"
        "2024-03-01T10:00:00Z,60,07700900001,07700900002\n"
        "2024-03-02T10:00:00Z,30,+447700900002,07700900001\n"
        "2024-03-03T10:00:00Z,5,07700900001,07700900003\n"
    )
    result = ingest.ingest_cdr(src, store.path("d1"), BUILTIN_PROFILES["canonical"])
    pairs = store.pairs(["d1"])
    assert pairs is not None
    got = pairs.sort("y").collect()
    assert got.select("x", "y", "contacts", "duration").rows() == [
        (447700900001, 447700900002, 2, 90),
        (447700900001, 447700900003, 1, 5),
    ]
    assert store.pairs(["d1", "never-imported"]) is None

    dataset = SimpleNamespace(id="d1", first_time=result.first_time, last_time=result.last_time)
    deps = SimpleNamespace(store=store)

    def scope(start: datetime | None, end: datetime | None) -> Scope:
        return Scope(None, None, (), "", start, end)  # type: ignore[arg-type]

    first, last = result.first_time, result.last_time
    assert first is not None and last is not None
    assert whole_dataset_pairs(scope(None, None), [dataset], deps) is not None  # type: ignore[arg-type]
    assert whole_dataset_pairs(scope(first, last + timedelta(seconds=1)), [dataset], deps) is not None  # type: ignore[arg-type]
    assert whole_dataset_pairs(scope(first + timedelta(seconds=1), None), [dataset], deps) is None  # type: ignore[arg-type]
    assert whole_dataset_pairs(scope(None, last), [dataset], deps) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("batch_rows", [1, 2, 1000])
def test_import_is_the_same_whatever_the_batch_size(tmp_path: Path, batch_rows: int) -> None:
    from toex_comms import demo

    src = demo.write_demo_cdr(tmp_path / "cdr.csv")
    one = ingest.ingest_cdr(src, tmp_path / "one", BUILTIN_PROFILES["canonical"], batch_rows=100_000)
    other = ingest.ingest_cdr(
        src, tmp_path / f"b{batch_rows}", BUILTIN_PROFILES["canonical"], batch_rows=batch_rows
    )
    assert (one.rows_accepted, one.distinct_identifiers) == (other.rows_accepted, other.distinct_identifiers)
    for name in ("numbers.parquet", "pairs.parquet"):
        left = pl.read_parquet(tmp_path / "one" / name).sort(pl.all())
        right = pl.read_parquet(tmp_path / f"b{batch_rows}" / name).sort(pl.all())
        assert left.equals(right)


def test_phone_index_from_pair_totals_equals_the_index_of_the_records() -> None:
    numbers = [447700900000 + i for i in range(40)]
    rows = _random_rows(4, 5000, numbers)  # includes records from a number to itself
    assert rows.filter(pl.col("a") == pl.col("b")).height > 0
    direct = ingest.number_index(rows.lazy()).collect()
    from_pairs = ingest.index_from_pairs(analysis.pair_totals(rows.lazy())).collect()
    assert from_pairs.schema == direct.schema
    assert from_pairs.equals(direct)
