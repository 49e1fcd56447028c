"""Advert import: the optional columns networks join on and their rejections with line numbers
(image hashes worked out from images are the CLI's: libs/cli tests)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from toex_comms.adapters import ingest

HEADER = "number,advert_id,site,date,location,text,seen,image_hash,name,age,price\n"


def _import(tmp_path: Path, body: str) -> tuple[pl.DataFrame, list[tuple[int, str]]]:
    src = tmp_path / "adverts.csv"
    src.write_text(HEADER + body)
    out = tmp_path / "out"
    result = ingest.ingest_adverts(src, out)
    rows = pl.read_parquet(sorted(out.glob("rows-*.parquet")))
    parts = sorted(out.glob("rejections-*.parquet"))
    rejected = pl.read_parquet(parts).to_dicts() if parts else []
    assert result.rows_rejected == len(rejected)
    return rows, [(r["line"], r["reason"]) for r in rejected]


def test_optional_columns_kept_and_typed(tmp_path: Path) -> None:
    rows, rejected = _import(
        tmp_path,
        "07700 900001,a1,s,2025-03-01,Derby,hello,2025-03-02T10:00:00Z,8f373714acfcf4d0,Lola,22,£120\n"
        "07700 900002,a2,s,2025-03-01,Derby,hi,,12345,Mia,16,80\n",
    )
    assert rejected == []
    got = rows.sort("advert_id").select("advert_id", "image_hash", "name", "age", "price").rows()
    assert got[0] == ("a1", 0x8F373714ACFCF4D0, "Lola", 22, 120.0)
    assert got[1] == ("a2", 12345, "Mia", 16, 80.0)
    assert rows.schema["seen"] == pl.Datetime("us", "UTC")
    assert list(rows.columns) == list(ingest.ADVERT_SCHEMA)


def test_bad_optional_values_rejected_with_line_numbers(tmp_path: Path) -> None:
    rows, rejected = _import(
        tmp_path,
        "07700 900001,a1,s,2025-03-01,Derby,ok,,,Lola,22,\n"
        "07700 900003,a3,s,2025-03-01,Derby,hi,,nothex,Ana,,\n"
        "07700 900004,a4,s,2025-03-01,Derby,hi,,,Eva,200,\n"
        "07700 900005,a5,s,2025-03-01,Derby,hi,yesterday,,Eva,20,-5\n",
    )
    assert rows["advert_id"].to_list() == ["a1"]
    assert rejected == [
        (3, "image_hash: not valid: nothex"),
        (4, "age: not valid: 200"),
        (5, "seen: not valid: yesterday; price: not valid: -5"),
    ]


def test_file_without_the_new_columns_still_imports(tmp_path: Path) -> None:
    src = tmp_path / "old.csv"
    src.write_text("number,advert_id,site,date,location,text\n07700 900001,a1,s,2025-03-01,Derby,hi\n")
    result = ingest.ingest_adverts(src, tmp_path / "out")
    assert result.rows_accepted == 1
    rows = pl.read_parquet(sorted((tmp_path / "out").glob("rows-*.parquet")))
    assert rows["image_hash"].to_list() == [None]
    assert rows["age"].to_list() == [None]


def test_accounts_kept_in_normal_form_and_bad_ones_rejected_with_line_numbers(tmp_path: Path) -> None:
    src = tmp_path / "adverts.csv"
    src.write_text(
        "number,advert_id,site,date,location,text,account\n"
        "07700 900001,a1,s,2025-03-01,Derby,hi,https://www.instagram.com/Some.Name/\n"
        "07700 900002,a2,s,2025-03-01,Derby,hi,insta:@some.name\n"
        "07700 900003,a3,s,2025-03-01,Derby,hi,\n"
        "07700 900004,a4,s,2025-03-01,Derby,hi,instagram:two words\n"
        "07700 900005,a5,s,2025-03-01,Derby,hi,nothing\n"
        "07700 900006,a6,s,2025-03-01,Derby,hi,https://www.instagram.com/p/Cx1/\n"
    )
    result = ingest.ingest_adverts(src, tmp_path / "out")
    rows = pl.read_parquet(sorted((tmp_path / "out").glob("rows-*.parquet")))
    rejected = pl.read_parquet(sorted((tmp_path / "out").glob("rejections-*.parquet"))).to_dicts()
    assert result.rows_accepted == 3 and result.rows_rejected == 3
    assert rows.sort("advert_id").select("advert_id", "account").rows() == [
        ("a1", "instagram:some.name"),
        ("a2", "instagram:some.name"),
        ("a3", None),
    ]
    reasons = {r["line"]: r["reason"] for r in rejected}
    assert reasons[5].startswith("account: 'two words' is not a instagram handle")
    assert reasons[6].startswith("account: 'nothing' is not an account")
    assert reasons[7].startswith("account: 'https://www.instagram.com/p/Cx1/' is a instagram page")
