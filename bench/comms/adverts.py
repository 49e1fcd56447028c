"""Advert networks bench: networks over a generated set of adverts with planted networks.

    uv run --frozen --no-sync python bench/comms/adverts.py                    # 1,000,000 adverts, 300,000 numbers
    uv run --frozen --no-sync python bench/comms/adverts.py --adverts 100000 --numbers 30000

The set: `--planted` networks of 3 to 8 numbers and 20 to 100 adverts each, joined across their
numbers by one kind of link only (a third by a shared text template with the worker's name
changed, a third by re-used images with 0 to 2 bits changed, a third by a controller number in
contact with all their numbers in the call data), moving between towns; the other adverts are
background: a number drawn from the rest of the pool (about 3 adverts a number), 20 words drawn
from a 20,000-word vocabulary, a random image hash, and call data of random pairs (one pair per
advert number on average, to one of 10 per advert number, 1 to a few contacts each: geometric,
p = 0.7; a planted controller has 2 to 39 contacts with each of its numbers).

Recall: planted networks whose adverts all lie in one found network. Precision: found networks
(two or more numbers) made only of one planted network's adverts. Time: `find_networks` alone
(the set is built before the clock starts), best and all of `--repeat` runs.

Cost added to every advert import (`--import-adverts`, default 100,000): a generated file of
that many adverts is imported as the service does (`ingest_adverts`: read, check, normalise,
write Parquet), and the network step an import now adds is timed on its own: `find_networks`
over the new dataset's rows, and over the job's adverts when the job already holds a dataset
of the same size (the import finds networks over all of its job's adverts, so the step grows
with the job). Alternated in one session (import, network step alone, network step with the
job's earlier dataset; twice); the figure is the ratio to the import. The settling of network
ids in PostgreSQL is not in it (one indexed look-up and insert of the adverts in networks).

Results go to bench/results/comms-adverts.md; a hand-written section from "## Analysis" on in
that file is kept when the bench rewrites it.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from datasketch import MinHash, MinHashLSH
from toex_comms.adapters.ingest import ingest_adverts
from toex_comms.domain.advert_networks import NetworkOptions, _text_edges, find_networks

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "comms-adverts.md"
TOWNS = ["Nottingham", "Derby", "Leicester", "Lincoln", "Northampton", "Sheffield", "Leeds", "Hull"]


def build(
    n_adverts: int, n_numbers: int, planted: int, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame, list[set[str]]]:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(20_000)])
    base = 447_700_000_000
    numbers = base + rng.permutation(n_numbers * 3)[:n_numbers]
    used = 0
    frames = []
    contacts: list[tuple[int, int, int]] = []
    truth: list[set[str]] = []
    advert = 0
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for p in range(planted):
        k = int(rng.integers(3, 9))
        nums = numbers[used : used + k]
        used += k
        size = int(rng.integers(20, 101))
        kind = p % 3
        ids = [f"P{p}-{i}" for i in range(size)]
        advert += size
        own = nums[np.concatenate([np.arange(k), rng.integers(0, k, size - k)])]
        template = " ".join(vocab[rng.integers(0, vocab.size, 25)])
        names = [f"name{rng.integers(0, 50)}" for _ in range(size)]
        if kind == 0:
            texts = [template.replace(template.split()[3], nm) for nm in names]
        else:
            texts = [" ".join(vocab[rng.integers(0, vocab.size, 20)]) for _ in range(size)]
        if kind == 1:
            pics = rng.integers(0, 2**63, 3, dtype=np.int64).astype(np.uint64)
            flips = rng.integers(0, 64, (size, 2))
            img = pics[rng.integers(0, 3, size)]
            mask = (np.uint64(1) << flips[:, 0].astype(np.uint64)) * (rng.random(size) < 0.5)
            mask2 = (np.uint64(1) << flips[:, 1].astype(np.uint64)) * (rng.random(size) < 0.3)
            img = img ^ mask.astype(np.uint64) ^ mask2.astype(np.uint64)
        else:
            img = rng.integers(0, 2**63, size, dtype=np.int64).astype(np.uint64)
        if kind == 2:
            controller = 447_900_000_000 + p
            contacts.extend((int(n), controller, int(rng.integers(2, 40))) for n in nums)
        towns = [TOWNS[(p + i * 3 // size) % len(TOWNS)] for i in range(size)]
        frames.append(
            pl.DataFrame(
                {
                    "advert_id": ids,
                    "number": own.astype(np.int64),
                    "site": ["site-a"] * size,
                    "posted": [start] * size,
                    "location": towns,
                    "text": texts,
                    "image_hash": img,
                    "name": names,
                }
            )
        )
        truth.append(set(ids))
    rest = n_adverts - advert
    pool = numbers[used:]
    words = vocab[rng.integers(0, vocab.size, (rest, 20))]
    noise = pl.DataFrame(
        {
            "advert_id": [f"N{i}" for i in range(rest)],
            "number": pool[rng.integers(0, pool.size, rest)].astype(np.int64),
            "site": "site-b",
            "posted": start,
            "location": np.array(TOWNS)[rng.integers(0, len(TOWNS), rest)],
            "text": pl.Series(words.tolist()).list.join(" "),
            "image_hash": rng.integers(0, 2**63, rest, dtype=np.int64).astype(np.uint64),
            "name": None,
        }
    )
    adverts = pl.concat(
        [f.with_columns(pl.col("name").cast(pl.String)) for f in frames] + [noise], how="vertical_relaxed"
    )
    # Background call data: random pairs of advert numbers and other numbers.
    m = n_numbers
    background = pl.DataFrame(
        {
            "a": numbers[rng.integers(0, n_numbers, m)].astype(np.int64),
            "b": (448_000_000_000 + rng.integers(0, 10 * m, m)).astype(np.int64),
            "contacts": rng.geometric(0.7, m).astype(np.int64),
        }
    )
    planted_contacts = pl.DataFrame(
        contacts, schema={"a": pl.Int64, "b": pl.Int64, "contacts": pl.Int64}, orient="row"
    )
    return adverts, pl.concat([background, planted_contacts]), truth


def score(networks: list, truth: list[set[str]]) -> tuple[float, float, int]:
    owner = {a: i for i, t in enumerate(truth) for a in t}
    found = 0
    net_of = {}
    for j, n in enumerate(networks):
        for a in n.adverts:
            net_of[a] = j
    for t in truth:
        if len({net_of.get(a, -1) for a in t}) == 1 and next(iter(t)) in net_of:
            found += 1
    pure = 0
    for n in networks:
        owners = {owner.get(a, -1) for a in n.adverts}
        if len(owners) == 1 and -1 not in owners:
            pure += 1
    return found / len(truth), pure / max(len(networks), 1), len(networks)


def text_baseline(adverts: pl.DataFrame, sample: int) -> tuple[float, float, int, int]:
    """Near-duplicate text on the first `sample` adverts two ways: one datasketch MinHash and a
    MinHashLSH insert and query per advert (the baseline), and the column-wise signatures and
    banding of `find_networks`. (baseline s, ours s, baseline pairs, our pairs)."""
    opts = NetworkOptions()
    docs = adverts.head(sample).with_row_index("doc").select(pl.col("doc").cast(pl.Int64), "text")
    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=opts.text_threshold, num_perm=opts.num_perm)
    pairs = 0
    for doc, text in docs.iter_rows():
        words = text.lower().split()
        m = MinHash(num_perm=opts.num_perm, seed=opts.seed)
        m.update_batch([" ".join(words[i : i + 3]).encode() for i in range(max(len(words) - 2, 1))])
        pairs += len(lsh.query(m))
        lsh.insert(doc, m)
    base = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = _text_edges(docs, opts).height
    return base, time.perf_counter() - t0, pairs, ours


def _advert_file(adverts: pl.DataFrame, path: Path) -> None:
    """Adverts as a scraped file: national numbers, ISO dates, hashes as 16 hex digits."""
    adverts.select(
        pl.concat_str(pl.lit("0"), pl.col("number").cast(pl.String).str.slice(2)).alias("number"),
        "advert_id",
        "site",
        pl.col("posted").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("date"),
        "location",
        "text",
        pl.col("image_hash").map_elements(lambda h: f"{h:016x}", return_dtype=pl.String).alias("image_hash"),
        "name",
    ).write_csv(path)


def import_cost(n: int, seed: int) -> tuple[int, list[tuple[float, float, float]]]:
    """(networks found over the job, [(import s, network step alone s, with the job's earlier
    dataset s)] per alternated round)."""
    adverts, _, _ = build(2 * n, max(2 * n * 3 // 10, 1000), max(n // 3000, 3), seed + 1)
    adverts = adverts.sample(fraction=1.0, shuffle=True, seed=seed)
    earlier, new = adverts.head(n), adverts.tail(n)
    rounds = []
    found = 0
    with tempfile.TemporaryDirectory(prefix="adverts-bench-") as tmp:
        work = Path(tmp)
        _advert_file(earlier, work / "earlier.csv")
        _advert_file(new, work / "new.csv")
        ingest_adverts(work / "earlier.csv", work / "earlier")
        prior = pl.scan_parquet(sorted((work / "earlier").glob("rows-*.parquet")))
        for r in range(2):
            out = work / f"new-{r}"
            t0 = time.perf_counter()
            result = ingest_adverts(work / "new.csv", out)
            ingest_s = time.perf_counter() - t0
            assert result.rows_accepted == n, result
            rows = pl.scan_parquet(sorted(out.glob("rows-*.parquet")))
            t0 = time.perf_counter()
            find_networks(rows.collect(), scope="regions/EMSOU")
            alone_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            found = len(
                find_networks(
                    pl.concat([prior, rows], how="diagonal_relaxed").collect(), scope="regions/EMSOU"
                )
            )
            job_s = time.perf_counter() - t0
            rounds.append((ingest_s, alone_s, job_s))
            print(
                f"import cost round {r + 1}: import {ingest_s:.2f}s, networks {alone_s:.2f}s, with the job's {job_s:.2f}s",
                flush=True,
            )
    return found, rounds


def _kept_analysis() -> list[str]:
    """The hand-written part of the results file, from "## Analysis" on."""
    if not RESULTS.exists():
        return []
    text = RESULTS.read_text()
    at = text.find("## Analysis")
    return ["", text[at:].rstrip("\n"), ""] if at != -1 else []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adverts", type=int, default=1_000_000)
    ap.add_argument("--numbers", type=int, default=300_000)
    ap.add_argument("--planted", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--baseline-sample", type=int, default=50_000)
    ap.add_argument("--import-adverts", type=int, default=100_000)
    args = ap.parse_args()
    job_networks, cost = import_cost(args.import_adverts, args.seed)
    t0 = time.perf_counter()
    adverts, contacts, truth = build(args.adverts, args.numbers, args.planted, args.seed)
    build_s = time.perf_counter() - t0
    print(
        f"built {adverts.height} adverts, {adverts['number'].n_unique()} numbers in {build_s:.1f}s",
        flush=True,
    )
    times = []
    networks: list = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        networks = find_networks(adverts, contacts=contacts)
        times.append(time.perf_counter() - t0)
        print(f"run {len(times)}: {times[-1]:.1f}s, {len(networks)} networks", flush=True)
    recall, precision, count = score(networks, truth)
    ratios = []
    for _ in range(2):  # alternated in one session: baseline then ours, twice
        ratios.append(text_baseline(adverts, args.baseline_sample))
        print(f"text baseline: {ratios[-1]}", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        "# Comms: advert networks",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores (shared with",
        "other work while it ran: times are noisy).",
        "",
        "`python bench/comms/adverts.py "
        + f"--adverts {args.adverts} --numbers {args.numbers} --planted {args.planted} --repeat {args.repeat} "
        + f"--import-adverts {args.import_adverts}`",
        "",
        "| what | figure |",
        "| --- | --- |",
        f"| adverts | {adverts.height:,} |",
        f"| distinct numbers | {adverts['number'].n_unique():,} |",
        f"| call-data pairs | {contacts.height:,} |",
        f"| planted networks | {len(truth)} (a third each by text template, images, controller) |",
        f"| find_networks, best of {len(times)} | {min(times):.1f} s (all: {', '.join(f'{t:.1f}' for t in times)}) |",
        "| target | under 60 s |",
        f"| networks found (2+ numbers) | {count} |",
        f"| recall on planted networks | {recall:.3f} |",
        f"| precision (found networks made only of one planted network) | {precision:.3f} |",
        f"| peak RSS of the process | {rss:,.0f} MiB |",
        "",
        f"Near-duplicate text on the first {args.baseline_sample:,} adverts, same session, alternated",
        "(baseline then ours, twice): one `datasketch.MinHash` + `MinHashLSH` insert and query per",
        "advert (baseline) against the column-wise signatures and banding used here.",
        "",
        "| run | baseline s | ours s | ratio | baseline candidate pairs / our verified edges (one per advert to its bucket's first) |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {i} | {b:.2f} | {o:.2f} | {b / o:.1f}x | {bp} / {op} |"
            for i, (b, o, bp, op) in enumerate(ratios, start=1)
        ],
        "",
        "## Cost added to each advert import",
        "",
        f"An import of {args.import_adverts:,} adverts (`ingest_adverts`), then the network step it now",
        "adds: `find_networks` over the new dataset alone, and over its job's adverts when the job",
        f"already holds a dataset of {args.import_adverts:,} ({job_networks} networks found). Alternated",
        "in one session, import then network steps, twice.",
        "",
        "| round | import s | network step alone s | ratio | with the job's earlier dataset s | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
        *[
            f"| {i} | {a:.2f} | {b:.2f} | {b / a:.2f} | {c:.2f} | {c / a:.2f} |"
            for i, (a, b, c) in enumerate(cost, start=1)
        ],
        *_kept_analysis(),
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
