"""Generated call data, ANPR reads and adverts with known answers: for the demo, tests and bench.

Numbers are in Ofcom's drama ranges (07700 900000-900999 and 020 7946 0000-0999) plus a
generated mobile range for the bench; vehicles are made up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

BASE = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)  # a Monday


def drama(i: int) -> str:
    return f"07700 900{i:03d}"


def e164(i: int) -> str:
    return f"+447700900{i:03d}"


# The demo's story: targets 001-005; 100 is a common contact of 001, 002 and 003; 101 of 001
# and 002; 200 talks only to 004. Watchlists: 300 is a registered sex offender, 301 a victim;
# 300 calls 301 three times.
DEMO_TARGETS = [drama(i) for i in range(1, 6)]


def demo_cdr_rows() -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []

    def add(
        minutes: int, a: int, b: int, kind: str = "voice", duration: int = 60, cell: str = "", bcell: str = ""
    ) -> None:
        rows.append(
            {
                "start_time": (BASE + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
                "duration": str(duration if kind == "voice" else 0),
                "calling_number": drama(a),
                "called_number": e164(b),
                "event_type": kind,
                "calling_cell": cell,
                "called_cell": bcell,
                "imei": "35693803564380" if a == 1 else "",
                "imsi": "",
            }
        )

    for k in range(4):
        add(10 * k, 1, 100, duration=120)
        add(10 * k + 1, 2, 100, kind="sms")
    add(50, 3, 100)
    add(60, 1, 101)
    add(61, 2, 101)
    add(70, 4, 200, duration=600)
    add(71, 4, 200, duration=600)
    add(80, 1, 2, duration=30)
    for k in range(3):
        add(100 + k * 60 * 24, 300, 301, duration=300)
    # 001 and 150 on cell C-17 within five minutes, twice; 150 never calls 001.
    add(200, 1, 5, cell="C-17")
    add(203, 150, 160, cell="C-17")
    add(300, 1, 5, cell="C-17")
    add(304, 150, 160, cell="C-17")
    return rows


def write_demo_cdr(path: Path) -> Path:
    pl.DataFrame(demo_cdr_rows()).write_csv(path)
    return path


def demo_anpr_rows() -> list[dict[str, str]]:
    """AB12CDE and XY34ZZZ travel together (within 60 s) past cameras on three days; LONE1 alone."""
    rows = []
    for day in range(3):
        for hop, camera in enumerate(("CAM-A1", "CAM-M6-12", "CAM-B7")):
            t = BASE + timedelta(days=day, minutes=20 * hop)
            rows.append(
                {
                    "vrm": "ab12 cde",
                    "camera_id": camera,
                    "camera_location": f"{camera} site",
                    "read_time": t.isoformat(),
                }
            )
            rows.append(
                {
                    "vrm": "XY34ZZZ",
                    "camera_id": camera,
                    "camera_location": f"{camera} site",
                    "read_time": (t + timedelta(seconds=45)).isoformat(),
                }
            )
        rows.append(
            {
                "vrm": "LONE1",
                "camera_id": "CAM-A1",
                "camera_location": "CAM-A1 site",
                "read_time": (BASE + timedelta(days=day, hours=5)).isoformat(),
            }
        )
    return rows


def write_demo_anpr(path: Path) -> Path:
    pl.DataFrame(demo_anpr_rows()).write_csv(path)
    return path


def demo_advert_rows() -> list[dict[str, str]]:
    """07700 900100 (a common contact in the call data) advertises in three towns."""
    rows = []
    for i, town in enumerate(("Leicester", "Derby", "Nottingham")):
        rows.append(
            {
                "number": drama(100),
                "advert_id": f"AD-{i}",
                "site": "example-adverts",
                "date": f"2024-03-0{i + 1}",
                "location": town,
                "text": "new in town",
            }
        )
    rows.append(
        {
            "number": drama(900),
            "advert_id": "AD-9",
            "site": "example-adverts",
            "date": "2024-03-02",
            "location": "Derby",
            "text": "=cmd|' /C calc'!A0",
        }
    )
    return rows


def write_demo_adverts(path: Path) -> Path:
    pl.DataFrame(demo_advert_rows()).write_csv(path)
    return path


def write_demo_files(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "targets.txt").write_text("\n".join(DEMO_TARGETS) + "\n")
    return [
        write_demo_cdr(out / "cdr.csv"),
        write_demo_anpr(out / "anpr.csv"),
        write_demo_adverts(out / "adverts.csv"),
        out / "targets.txt",
    ]


# ---------------------------------------------------------------- bench-sized data


def bench_targets(n: int = 40) -> list[str]:
    return [f"+4479{i:08d}" for i in range(n)]


def write_bench_cdr(
    path: Path, rows: int, *, targets: int = 40, pool: int = 200_000, seed: int = 7, chunk: int = 1_000_000
) -> Path:
    """`rows` records, each between one of `targets` numbers and a number from `pool` (skewed:
    a few contacts are called often). Numbers appear in national and international formats,
    so the importer has about twice `pool` distinct raw strings to normalise."""
    rng = np.random.default_rng(seed)
    target_numbers = np.array(bench_targets(targets))
    start = int(BASE.timestamp())
    with path.open("w") as handle:
        handle.write(
            "start_time,duration,calling_number,called_number,event_type,calling_cell,called_cell,imei,imsi\n"
        )
        written = 0
        while written < rows:
            n = min(chunk, rows - written)
            t = target_numbers[rng.integers(0, targets, n)]
            other_ids = np.minimum((rng.pareto(1.2, n) * 50).astype(np.int64), pool - 1)
            national = rng.random(n) < 0.5
            other = np.where(
                national,
                np.char.add("0780", np.char.zfill(other_ids.astype(str), 7)),
                np.char.add("+44780", np.char.zfill(other_ids.astype(str), 7)),
            )
            outgoing = rng.random(n) < 0.5
            kinds = np.array(["voice", "sms", "data"])[rng.choice(3, n, p=[0.6, 0.35, 0.05])]
            frame = pl.DataFrame(
                {
                    "start_time": (start + rng.integers(0, 90 * 86400, n)) * 1000,
                    "duration": rng.integers(0, 900, n),
                    "calling_number": np.where(outgoing, t, other),
                    "called_number": np.where(outgoing, other, t),
                    "event_type": kinds,
                    "calling_cell": np.char.add("C", rng.integers(0, 5000, n).astype(str)),
                    "called_cell": pl.repeat(None, n, dtype=pl.String, eager=True),
                    "imei": pl.repeat(None, n, dtype=pl.String, eager=True),
                    "imsi": pl.repeat(None, n, dtype=pl.String, eager=True),
                }
            )
            frame = frame.with_columns(
                pl.col("start_time").cast(pl.Datetime("ms")).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            )
            frame.write_csv(handle, include_header=False)
            written += n
    return path


def write_bench_anpr(
    path: Path,
    reads: int,
    *,
    vehicles: int = 200_000,
    cameras: int = 2_000,
    convoys: int = 20,
    seed: int = 11,
) -> Path:
    """Random reads over 30 days plus `convoys` planted pairs seen together at five cameras."""
    rng = np.random.default_rng(seed)
    start = int(BASE.timestamp()) * 1_000_000
    n = reads - convoys * 10
    vrm = np.char.add("BV", np.char.zfill(rng.integers(0, vehicles, n).astype(str), 6))
    camera = np.char.add("CAM", rng.integers(0, cameras, n).astype(str))
    times = start + rng.integers(0, 30 * 86400, n).astype(np.int64) * 1_000_000
    planted_v, planted_c, planted_t = [], [], []
    for k in range(convoys):
        for hop in range(5):
            t = start + (k * 3600 + hop * 600) * 1_000_000
            planted_v += [f"CV{k:03d}A", f"CV{k:03d}B"]
            planted_c += [f"CAM{hop * 7 + k}"] * 2
            planted_t += [t, t + 40 * 1_000_000]
    frame = pl.DataFrame(
        {
            "vrm": np.concatenate([vrm, np.array(planted_v)]),
            "camera_id": np.concatenate([camera, np.array(planted_c)]),
            "camera_location": pl.repeat(None, n + len(planted_v), dtype=pl.String, eager=True),
            "read_time": pl.Series(np.concatenate([times, np.array(planted_t, dtype=np.int64)])).cast(
                pl.Datetime("us", "UTC")
            ),
        }
    ).with_columns(pl.col("read_time").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    frame.write_csv(path)
    return path
