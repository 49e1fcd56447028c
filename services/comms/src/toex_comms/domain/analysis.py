"""The analyses, as pure functions over polars LazyFrames of canonical rows (no I/O).

CDR rows: start (UTC), duration (s), a, b (E.164 digits as Int64), kind (1 voice, 2 sms, 3 data),
a_cell, b_cell, imei, imsi. ANPR rows: time (UTC), vrm, camera, location.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

LOCAL_ZONE = "Europe/London"
VOICE, SMS = 1, 2


def window(lf: pl.LazyFrame, column: str, start: datetime | None, end: datetime | None) -> pl.LazyFrame:
    if start is not None:
        lf = lf.filter(pl.col(column) >= start)
    if end is not None:
        lf = lf.filter(pl.col(column) < end)
    return lf


@dataclass(frozen=True)
class Tie:
    other: int
    contacts: int
    calls: int
    sms: int
    duration: int
    first: datetime
    last: datetime


def _tie_aggs() -> list[pl.Expr]:
    return [
        pl.len().cast(pl.Int64).alias("contacts"),
        (pl.col("kind") == VOICE).sum().cast(pl.Int64).alias("calls"),
        (pl.col("kind") == SMS).sum().cast(pl.Int64).alias("sms"),
        pl.col("duration").sum().cast(pl.Int64).alias("duration"),
        pl.col("start").min().alias("first"),
        pl.col("start").max().alias("last"),
    ]


PAIR_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "x": pl.Int64,
    "y": pl.Int64,
    "contacts": pl.Int64,
    "calls": pl.Int64,
    "sms": pl.Int64,
    "duration": pl.Int64,
    "first": pl.Datetime("us", "UTC"),
    "last": pl.Datetime("us", "UTC"),
}


def pair_totals(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Contact totals per unordered pair of numbers (x <= y): the contact index an import
    writes beside its rows, so analyses over a whole dataset read pairs, not records."""
    return (
        lf.select(
            pl.min_horizontal("a", "b").alias("x"),
            pl.max_horizontal("a", "b").alias("y"),
            "start",
            "duration",
            "kind",
        )
        .group_by("x", "y")
        .agg(_tie_aggs())
        .select([pl.col(c).cast(t) for c, t in PAIR_SCHEMA.items()])
    )


def merge_pairs(pairs: pl.LazyFrame) -> pl.LazyFrame:
    """Pairs from several datasets summed into one row per pair."""
    return pairs.group_by("x", "y").agg(
        pl.col("contacts").sum(),
        pl.col("calls").sum(),
        pl.col("sms").sum(),
        pl.col("duration").sum(),
        pl.col("first").min(),
        pl.col("last").max(),
    )


def _ties_from_pairs(pairs: pl.LazyFrame, targets: list[int]) -> pl.DataFrame:
    t = pl.Series(targets, dtype=pl.Int64).implode()
    touching = pairs.filter(pl.col("x") != pl.col("y")).filter(pl.col("x").is_in(t) | pl.col("y").is_in(t))
    cols = ["contacts", "calls", "sms", "duration", "first", "last"]
    as_x = touching.filter(pl.col("x").is_in(t)).select(
        pl.col("x").alias("target"), pl.col("y").alias("other"), *cols
    )
    as_y = touching.filter(pl.col("y").is_in(t)).select(
        pl.col("y").alias("target"), pl.col("x").alias("other"), *cols
    )
    return (
        pl.concat([as_x, as_y])
        .group_by("target", "other")
        .agg(
            pl.col("contacts").sum(),
            pl.col("calls").sum(),
            pl.col("sms").sum(),
            pl.col("duration").sum(),
            pl.col("first").min(),
            pl.col("last").max(),
        )
        .collect()
    )


def target_ties(lf: pl.LazyFrame, targets: list[int], pairs: pl.LazyFrame | None = None) -> pl.DataFrame:
    """One row per (target, other number) with the contact between them, either direction.
    A record between two targets counts for both. With `pairs` (`pair_totals` of the same
    rows) the answer is read from them instead of the records."""
    if pairs is not None:
        return _ties_from_pairs(pairs, targets)
    cols = ["a", "b", "start", "duration", "kind"]
    touching = lf.filter(pl.col("a").is_in(targets) | pl.col("b").is_in(targets)).select(cols)
    as_a = touching.filter(pl.col("a").is_in(targets)).select(
        pl.col("a").alias("target"), pl.col("b").alias("other"), "start", "duration", "kind"
    )
    as_b = touching.filter(pl.col("b").is_in(targets)).select(
        pl.col("b").alias("target"), pl.col("a").alias("other"), "start", "duration", "kind"
    )
    return (
        pl.concat([as_a, as_b])
        .filter(pl.col("target") != pl.col("other"))
        .group_by("target", "other")
        .agg(_tie_aggs())
        .collect()
    )


def _ties_of(rows: pl.DataFrame) -> list[Tie]:
    return [
        Tie(r["target"], r["contacts"], r["calls"], r["sms"], r["duration"], r["first"], r["last"])
        for r in rows.sort(["contacts", "duration"], descending=True).iter_rows(named=True)
    ]


# ---------------------------------------------------------------- contact network


@dataclass(frozen=True)
class Edge:
    a: int
    b: int
    calls: int
    sms: int
    duration: int
    contacts: int
    first: datetime
    last: datetime


@dataclass
class Network:
    targets: list[int]
    nodes: dict[int, int]  # number -> events within the network
    edges: list[Edge]


def contact_network(
    lf: pl.LazyFrame,
    targets: list[int],
    *,
    min_contacts: int = 1,
    max_edges: int = 2000,
    pairs: pl.LazyFrame | None = None,
) -> Network:
    """Edges touching at least one target, weighted by calls, texts and duration. With `pairs`
    (`pair_totals` of the same rows) the edges are read from them."""
    if pairs is not None:
        t = pl.Series(targets, dtype=pl.Int64).implode()
        totals = merge_pairs(
            pairs.filter(pl.col("x") != pl.col("y")).filter(pl.col("x").is_in(t) | pl.col("y").is_in(t))
        )
    else:
        totals = pair_totals(
            lf.filter(pl.col("a").is_in(targets) | pl.col("b").is_in(targets)).filter(
                pl.col("a") != pl.col("b")
            )
        )
    edges = (
        totals.filter(pl.col("contacts") >= max(1, min_contacts))
        .sort(["contacts", "duration", "x", "y"], descending=[True, True, False, False])
        .head(max_edges)
        .collect()
    )
    out = [
        Edge(r["x"], r["y"], r["calls"], r["sms"], r["duration"], r["contacts"], r["first"], r["last"])
        for r in edges.iter_rows(named=True)
    ]
    nodes: dict[int, int] = dict.fromkeys(targets, 0)
    for e in out:
        nodes[e.a] = nodes.get(e.a, 0) + e.contacts
        nodes[e.b] = nodes.get(e.b, 0) + e.contacts
    return Network(targets, nodes, out)


# ---------------------------------------------------------------- common contacts and suspects


@dataclass
class CommonContact:
    number: int
    target: bool
    target_count: int
    contacts: int
    duration: int
    ties: list[Tie] = field(default_factory=list)


def common_contacts(
    lf: pl.LazyFrame,
    targets: list[int],
    *,
    min_targets: int = 2,
    include_targets: bool = False,
    limit: int = 100,
    pairs: pl.LazyFrame | None = None,
) -> list[CommonContact]:
    ties = target_ties(lf, targets, pairs)
    if not include_targets:
        ties = ties.filter(~pl.col("other").is_in(targets))
    ranked = (
        ties.group_by("other")
        .agg(
            pl.col("target").n_unique().alias("n"),
            pl.col("contacts").sum().alias("contacts"),
            pl.col("duration").sum().alias("duration"),
        )
        .filter(pl.col("n") >= max(1, min_targets))
        .sort(["n", "contacts", "duration", "other"], descending=[True, True, True, False])
        .head(limit)
    )
    keep = ranked["other"].to_list()
    by_number = {k: g for (k,), g in ties.filter(pl.col("other").is_in(keep)).group_by("other")}
    return [
        CommonContact(
            r["other"],
            r["other"] in targets,
            r["n"],
            r["contacts"],
            r["duration"],
            _ties_of(by_number[r["other"]]),
        )
        for r in ranked.iter_rows(named=True)
    ]


@dataclass
class Suspect:
    number: int
    score: float
    target_count: int
    contacts: int
    duration: int
    ties: list[Tie]
    reason: str


def suspect_score(target_count: int, contacts: int, duration: int) -> float:
    """Breadth first (how many targets), then how much contact and how long: ten points per
    target, plus log-scaled contact count and minutes of calls."""
    return round(10.0 * target_count + math.log1p(contacts) + math.log1p(duration / 60.0), 3)


def _fmt(number: int) -> str:
    return f"+{number}"


def _reason(s_targets: int, all_targets: int, ties: list[Tie]) -> str:
    parts = []
    for t in ties[:5]:
        parts.append(
            f"{_fmt(t.other)}: {t.contacts} contacts ({t.calls} calls, {t.sms} texts, {t.duration // 60} min) "
            f"{t.first:%Y-%m-%d} to {t.last:%Y-%m-%d}"
        )
    more = f"; and {len(ties) - 5} more" if len(ties) > 5 else ""
    return f"in contact with {s_targets} of {all_targets} targets: " + "; ".join(parts) + more


def rank_suspects(
    lf: pl.LazyFrame,
    targets: list[int],
    *,
    limit: int = 25,
    max_degree: int = 0,
    pairs: pl.LazyFrame | None = None,
) -> list[Suspect]:
    ties = target_ties(lf, targets, pairs).filter(~pl.col("other").is_in(targets))
    if max_degree > 0 and ties.height:
        candidates = ties["other"].unique().to_list()
        if pairs is not None:
            partners = pl.concat(
                [
                    pairs.filter(pl.col("x").is_in(candidates)).select(
                        pl.col("x").alias("n"), pl.col("y").alias("m")
                    ),
                    pairs.filter(pl.col("y").is_in(candidates)).select(
                        pl.col("y").alias("n"), pl.col("x").alias("m")
                    ),
                ]
            )
        else:
            partners = pl.concat(
                [
                    lf.filter(pl.col("a").is_in(candidates)).select(
                        pl.col("a").alias("n"), pl.col("b").alias("m")
                    ),
                    lf.filter(pl.col("b").is_in(candidates)).select(
                        pl.col("b").alias("n"), pl.col("a").alias("m")
                    ),
                ]
            )
        busy = (
            partners.group_by("n")
            .agg(pl.col("m").n_unique().alias("d"))
            .filter(pl.col("d") > max_degree)
            .collect()
        )
        ties = ties.filter(~pl.col("other").is_in(busy["n"].to_list()))
    ties = _likely_top(ties, limit)
    out: list[Suspect] = []
    for (number,), group in ties.group_by("other"):
        t = _ties_of(group.with_columns(pl.col("target")))
        count, contacts, duration = len(t), sum(x.contacts for x in t), sum(x.duration for x in t)
        out.append(
            Suspect(
                number,
                suspect_score(count, contacts, duration),
                count,
                contacts,
                duration,
                t,
                _reason(count, len(targets), t),
            )
        )
    out.sort(key=lambda s: (-s.score, s.number))
    return out[:limit]


def _likely_top(ties: pl.DataFrame, limit: int) -> pl.DataFrame:
    """The ties of the numbers that can be among the `limit` best scores: the score computed in
    polars, every number within 0.01 of the limit-th best kept (more than any rounding
    difference from `suspect_score`), so the exact ranking is then made over few numbers."""
    per = ties.group_by("other").agg(
        pl.len().alias("n"), pl.col("contacts").sum().alias("c"), pl.col("duration").sum().alias("d")
    )
    if per.height <= limit:
        return ties
    score = 10.0 * pl.col("n") + pl.col("c").cast(pl.Float64).log1p() + (pl.col("d") / 60.0).log1p()
    scored = per.select("other", score.alias("s"))
    cutoff = scored["s"].sort(descending=True)[max(limit, 1) - 1]
    keep = scored.filter(pl.col("s") >= cutoff - 0.01)["other"].implode()
    return ties.filter(pl.col("other").is_in(keep))


# ---------------------------------------------------------------- target profile


@dataclass
class Profile:
    target: int
    events: int
    first: datetime | None
    last: datetime | None
    top: list[Tie]
    by_hour: list[int]
    by_weekday: list[int]
    imeis: list[str]
    imsis: list[str]


def target_profile(lf: pl.LazyFrame, target: int, *, top: int = 20) -> Profile:
    rows = lf.filter((pl.col("a") == target) | (pl.col("b") == target)).collect()
    ties = target_ties(rows.lazy(), [target])
    local = rows.select(pl.col("start").dt.convert_time_zone(LOCAL_ZONE).alias("t"))
    hours = local.group_by(pl.col("t").dt.hour().alias("h")).len()
    days = local.group_by(pl.col("t").dt.weekday().alias("d")).len()
    by_hour = [0] * 24
    for h, n in hours.iter_rows():
        by_hour[h] = n
    by_weekday = [0] * 7
    for d, n in days.iter_rows():
        by_weekday[d - 1] = n
    own = rows.filter(pl.col("a") == target)
    return Profile(
        target,
        rows.height,
        rows["start"].min() if rows.height else None,  # type: ignore[arg-type]
        rows["start"].max() if rows.height else None,  # type: ignore[arg-type]
        [
            Tie(r["other"], r["contacts"], r["calls"], r["sms"], r["duration"], r["first"], r["last"])
            for r in ties.sort(["contacts", "duration", "other"], descending=[True, True, False])
            .head(top)
            .iter_rows(named=True)
        ],
        by_hour,
        by_weekday,
        sorted(own["imei"].drop_nulls().unique().to_list()),
        sorted(own["imsi"].drop_nulls().unique().to_list()),
    )


# ---------------------------------------------------------------- co-location


@dataclass
class Colocation:
    a: int
    b: int
    occasions: int
    cells: list[str]
    first: datetime
    last: datetime
    in_contact: bool


def _bucket_pairs(
    left: pl.LazyFrame, right: pl.LazyFrame, key: str, time: str, window_seconds: int
) -> pl.LazyFrame:
    """Pairs of rows with the same `key` whose times are at most `window_seconds` apart.

    Equi-join on (key, time bucket) against the right side copied into its own and the next
    bucket, so no pair is missed and no quadratic per-key join is needed."""
    width = window_seconds * 1_000_000
    l2 = left.with_columns((pl.col(time).dt.epoch("us") // width).alias("_bucket"))
    r = right.with_columns((pl.col(time).dt.epoch("us") // width).alias("_bucket"))
    r2 = pl.concat([r, r.with_columns(pl.col("_bucket") + 1), r.with_columns(pl.col("_bucket") - 1)])
    return (
        l2.join(r2, on=[key, "_bucket"], suffix="_r")
        .filter((pl.col(time) - pl.col(f"{time}_r")).abs() <= pl.duration(seconds=window_seconds))
        .drop("_bucket")
    )


def colocations(
    lf: pl.LazyFrame, targets: list[int], *, window_seconds: int = 900, limit: int = 100
) -> list[Colocation]:
    sightings = pl.concat(
        [
            lf.filter(pl.col("a_cell").is_not_null()).select(
                pl.col("a").alias("n"), "start", pl.col("a_cell").alias("cell")
            ),
            lf.filter(pl.col("b_cell").is_not_null()).select(
                pl.col("b").alias("n"), "start", pl.col("b_cell").alias("cell")
            ),
        ]
    ).unique()
    mine = sightings.filter(pl.col("n").is_in(targets))
    pairs = (
        _bucket_pairs(mine, sightings, "cell", "start", window_seconds)
        .filter(pl.col("n") != pl.col("n_r"))
        # a pair of two targets is reported once
        .filter(~pl.col("n_r").is_in(targets) | (pl.col("n") < pl.col("n_r")))
        .unique(["n", "n_r", "cell", "start", "start_r"])
        .group_by("n", "n_r")
        .agg(
            pl.len().alias("occasions"),
            pl.col("cell").unique().sort().alias("cells"),
            pl.min_horizontal("start", "start_r").min().alias("first"),
            pl.max_horizontal("start", "start_r").max().alias("last"),
        )
        .sort(["occasions", "n", "n_r"], descending=[True, False, False])
        .head(limit)
        .collect()
    )
    if not pairs.height:
        return []
    others = pairs["n_r"].unique().to_list()
    contact = (
        lf.filter(
            (pl.col("a").is_in(targets) & pl.col("b").is_in(others))
            | (pl.col("b").is_in(targets) & pl.col("a").is_in(others))
        )
        .select(pl.min_horizontal("a", "b").alias("x"), pl.max_horizontal("a", "b").alias("y"))
        .unique()
        .collect()
    )
    linked = {(x, y) for x, y in contact.iter_rows()}
    return [
        Colocation(
            r["n"],
            r["n_r"],
            r["occasions"],
            r["cells"],
            r["first"],
            r["last"],
            (min(r["n"], r["n_r"]), max(r["n"], r["n_r"])) in linked,
        )
        for r in pairs.iter_rows(named=True)
    ]


# ---------------------------------------------------------------- watchlist contact


def watchlist_contacts(lf: pl.LazyFrame, members: dict[int, list[str]]) -> pl.DataFrame:
    """Contacts between numbers on different lists. `members`: number -> list names holding it.

    One row per (list_a, number_a, list_b, number_b) with list_a < list_b, or equal list names
    never; counts, duration, first and last contact."""
    if not members:
        return pl.DataFrame()
    keys = list(members)
    listing = pl.DataFrame(
        [(n, name) for n, names in members.items() for name in names],
        schema={"n": pl.Int64, "list": pl.String},
        orient="row",
    ).lazy()
    rows = lf.filter(pl.col("a").is_in(keys) & pl.col("b").is_in(keys) & (pl.col("a") != pl.col("b"))).select(
        "a", "b", "start", "duration", "kind"
    )
    joined = (
        rows.join(listing.rename({"n": "a", "list": "la"}), on="a")
        .join(listing.rename({"n": "b", "list": "lb"}), on="b")
        .filter(pl.col("la") != pl.col("lb"))
    )
    swap = pl.col("la") > pl.col("lb")
    canon = joined.select(
        pl.when(swap).then("lb").otherwise("la").alias("list_a"),
        pl.when(swap).then("b").otherwise("a").alias("number_a"),
        pl.when(swap).then("la").otherwise("lb").alias("list_b"),
        pl.when(swap).then("a").otherwise("b").alias("number_b"),
        "start",
        "duration",
        "kind",
    )
    return (
        canon.group_by("list_a", "number_a", "list_b", "number_b")
        .agg(_tie_aggs())
        .sort(["list_a", "number_a", "list_b", "number_b"])
        .collect()
    )


# ---------------------------------------------------------------- adverts


def advert_summary(lf: pl.LazyFrame) -> pl.DataFrame:
    return (
        lf.group_by("number")
        .agg(
            pl.col("advert_id").n_unique().alias("adverts"),
            pl.col("location").drop_nulls().unique().sort().alias("locations"),
            pl.col("site").drop_nulls().unique().sort().alias("sites"),
            pl.col("posted").min().alias("first"),
            pl.col("posted").max().alias("last"),
        )
        .sort("number")
        .collect()
    )


# ---------------------------------------------------------------- ANPR


@dataclass
class Convoy:
    vrm_a: str
    vrm_b: str
    occasions: int
    cameras: list[str]
    days: int
    first: datetime
    last: datetime
    median_gap: int


def convoys(
    lf: pl.LazyFrame,
    *,
    window_seconds: int = 180,
    min_occasions: int = 3,
    vrms: list[str] | None = None,
    limit: int = 100,
) -> list[Convoy]:
    reads = lf.select("vrm", "camera", "time")
    left = reads.filter(pl.col("vrm").is_in(vrms)) if vrms else reads
    pairs = (
        _bucket_pairs(left, reads, "camera", "time", window_seconds)
        .filter(pl.col("vrm") != pl.col("vrm_r"))
        .select(
            pl.min_horizontal("vrm", "vrm_r").alias("vrm_a"),
            pl.max_horizontal("vrm", "vrm_r").alias("vrm_b"),
            "camera",
            pl.min_horizontal("time", "time_r").alias("t"),
            (pl.col("time") - pl.col("time_r")).abs().dt.total_seconds().alias("gap"),
        )
        .unique(["vrm_a", "vrm_b", "camera", "t"])
        .group_by("vrm_a", "vrm_b")
        .agg(
            pl.len().alias("occasions"),
            pl.col("camera").unique().sort().alias("cameras"),
            pl.col("t").dt.convert_time_zone(LOCAL_ZONE).dt.date().n_unique().alias("days"),
            pl.col("t").min().alias("first"),
            pl.col("t").max().alias("last"),
            pl.col("gap").median().alias("median_gap"),
        )
        .filter(pl.col("occasions") >= max(1, min_occasions))
        .sort(["occasions", "days", "vrm_a", "vrm_b"], descending=[True, True, False, False])
        .head(limit)
        .collect()
    )
    return [
        Convoy(
            r["vrm_a"],
            r["vrm_b"],
            r["occasions"],
            r["cameras"],
            r["days"],
            r["first"],
            r["last"],
            int(r["median_gap"] or 0),
        )
        for r in pairs.iter_rows(named=True)
    ]


@dataclass
class TravelPattern:
    vrm: str
    reads: int
    locations: list[
        tuple[str, str, int, int, datetime, datetime]
    ]  # camera, location, reads, usual hour, first, last
    by_hour: list[int]
    by_weekday: list[int]
    routes: list[tuple[str, str, int, int]]  # from, to, count, median seconds


def travel_pattern(lf: pl.LazyFrame, vrm: str, *, max_hop_seconds: int = 7200) -> TravelPattern:
    reads = (
        lf.filter(pl.col("vrm") == vrm)
        .sort("time")
        .with_columns(pl.col("time").dt.convert_time_zone(LOCAL_ZONE).alias("local"))
        .collect()
    )
    by_hour, by_weekday = [0] * 24, [0] * 7
    for h, n in reads.group_by(pl.col("local").dt.hour()).len().iter_rows():
        by_hour[h] = n
    for d, n in reads.group_by(pl.col("local").dt.weekday()).len().iter_rows():
        by_weekday[d - 1] = n
    locations = (
        reads.group_by("camera")
        .agg(
            pl.col("location").drop_nulls().first().alias("location"),
            pl.len().alias("n"),
            pl.col("local").dt.hour().mode().first().alias("hour"),
            pl.col("time").min().alias("first"),
            pl.col("time").max().alias("last"),
        )
        .sort(["n", "camera"], descending=[True, False])
    )
    hops = (
        reads.select(
            pl.col("camera").alias("src"),
            pl.col("camera").shift(-1).alias("dst"),
            (pl.col("time").shift(-1) - pl.col("time")).dt.total_seconds().alias("secs"),
        )
        .filter(
            pl.col("dst").is_not_null()
            & (pl.col("src") != pl.col("dst"))
            & (pl.col("secs") <= max_hop_seconds)
        )
        .group_by("src", "dst")
        .agg(pl.len().alias("n"), pl.col("secs").median().alias("median"))
        .sort(["n", "src", "dst"], descending=[True, False, False])
    )
    return TravelPattern(
        vrm,
        reads.height,
        [
            (r["camera"], r["location"] or "", r["n"], r["hour"], r["first"], r["last"])
            for r in locations.iter_rows(named=True)
        ],
        by_hour,
        by_weekday,
        [(r["src"], r["dst"], r["n"], int(r["median"])) for r in hops.iter_rows(named=True)],
    )
