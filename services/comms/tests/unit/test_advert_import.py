"""Advert import: the optional columns networks join on, their rejections with line numbers,
and image hashes worked out from images beside the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image
from toex_comms.adapters import ingest
from toex_comms.adapters.images import add_image_hashes, perceptual_hash

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


def _picture(path: Path, seed: int, noise: float = 0.0) -> None:
    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(0, 255, (8, 8)), np.ones((32, 32))).astype(np.float64)
    if noise:
        base += np.random.default_rng(99).normal(0, noise, base.shape)
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path)


def test_image_hashes_from_images_beside_the_file(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    _picture(tmp_path / "img" / "a.png", 1)
    _picture(tmp_path / "img" / "a-noisy.png", 1, noise=4.0)
    _picture(tmp_path / "img" / "b.png", 2)
    (tmp_path / "img" / "broken.png").write_bytes(b"not an image")
    src = tmp_path / "adverts.csv"
    src.write_text(
        "number,advert_id,image\n"
        "07700 900001,a1,img/a.png\n"
        "07700 900002,a2,img/a-noisy.png\n"
        "07700 900003,a3,img/b.png\n"
        "07700 900004,a4,img/broken.png\n"
        "07700 900005,a5,../../etc/passwd\n"
    )
    dst = tmp_path / "hashed.csv"
    problems = add_image_hashes(src, dst)
    assert [p[0] for p in problems] == [5, 6]
    assert "cannot be read" in problems[0][1] and "outside the file's folder" in problems[1][1]
    result = ingest.ingest_adverts(dst, tmp_path / "out")
    assert result.rows_accepted == 5
    rows = pl.read_parquet(sorted((tmp_path / "out").glob("rows-*.parquet"))).sort("advert_id")
    hashes = rows["image_hash"].to_list()
    assert hashes[0] == perceptual_hash(tmp_path / "img" / "a.png")
    assert bin(hashes[0] ^ hashes[1]).count("1") <= 3  # the same picture, re-saved with noise
    assert bin(hashes[0] ^ hashes[2]).count("1") > 10  # another picture
    assert hashes[3] is None and hashes[4] is None


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
