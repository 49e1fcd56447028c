"""Perceptual hashes of advert images, for an advert file that names images rather than hashes.

An advert file may carry an `image` column: a path to the image, relative to a folder of images
(`toex comms import-adverts --images DIR`). The service never opens paths named in an upload; the
hashes are worked out here, where the file and its images are, with `imagehash` (pHash, 64 bits,
written as 16 hex digits as imagehash writes it), into an `image_hash` column of a copy of the
file, which is what is uploaded. A hash already given on a row is kept. A path that leaves the
folder, or an image that cannot be read, leaves the hash empty and is reported with its line
number (the row is still imported). A file read through an advert mapping profile names both
columns and the separator as its profile does (`--profile`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import imagehash
from PIL import Image, UnidentifiedImageError

IMAGE_COLUMN = "image"
HASH_COLUMN = "image_hash"


def perceptual_hash(path: Path) -> int:
    """The 64-bit pHash of the image at `path` (imagehash's bit order)."""
    with Image.open(path) as image:
        return int(str(imagehash.phash(image)), 16)


def hash_to_text(value: int) -> str:
    """As imagehash writes a hash: 16 hex digits."""
    return f"{value:016x}"


def add_image_hashes(
    src: Path,
    dst: Path,
    *,
    images: Path | None = None,
    column: str = IMAGE_COLUMN,
    hash_column: str = HASH_COLUMN,
    delimiter: str = ",",
    encoding: str = "utf-8-sig",
) -> list[tuple[int, str]]:
    """Copy the CSV `src` to `dst` (UTF-8, the same `delimiter`) with a `hash_column` worked out
    from `column`, a path under `images` (default: the file's own folder).

    Returns the problems as (line, reason). Raises ValueError when the file has no such column."""
    base = (images or src.parent).resolve()
    problems: list[tuple[int, str]] = []
    with (
        src.open(newline="", encoding=encoding) as fin,
        dst.open("w", newline="", encoding="utf-8") as fout,
    ):
        reader = csv.DictReader(fin, delimiter=delimiter)
        names = list(reader.fieldnames or [])
        if column not in names:
            raise ValueError(f"the file has no {column!r} column")
        out_names = names if hash_column in names else [*names, hash_column]
        writer = csv.DictWriter(fout, fieldnames=out_names, delimiter=delimiter)
        writer.writeheader()
        for number, row in enumerate(reader, start=2):
            given = (row.get(hash_column) or "").strip()
            rel = (row.get(column) or "").strip()
            if not given and rel:
                path = (base / rel).resolve()
                if not path.is_relative_to(base):
                    problems.append((number, f"{column}: outside the images folder: {rel}"))
                else:
                    try:
                        given = hash_to_text(perceptual_hash(path))
                    except (OSError, UnidentifiedImageError) as exc:
                        problems.append((number, f"{column}: cannot be read: {rel} ({type(exc).__name__})"))
            row[hash_column] = given
            writer.writerow(row)
    return problems
