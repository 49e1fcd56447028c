"""Advert networks: adverts joined by what they share, ranked by indicators a researcher can read.

Adverts (one row per advert and number) are joined into networks when they

- share a number;
- name the same online account (`platform:handle` in normal form, as the import keeps it);
- have near-duplicate text: MinHash signatures over word shingles (3 words), banded (LSH) so
  that only adverts sharing a band are compared; the band split (bands and rows per band that
  best fit the similarity threshold) and the slot seeds are `datasketch`'s. Signatures are
  computed column-wise over all adverts at once (polars hashes, one seeded hash per slot) rather
  than one `datasketch.MinHash` object per advert, which is what makes a million adverts take
  seconds; a candidate pair is kept only when its estimated
  similarity (agreeing signature slots) reaches the threshold;
- have the same or a near-same image: 64-bit perceptual hashes within `max_image_distance` bits
  (Hamming). The hash is cut into `max_image_distance + 1` bands: two hashes that close agree on
  at least one band whole (pigeonhole), so only hashes sharing a band value are compared;
- use numbers in contact in the call data with a common controller: a number not itself in the
  adverts, in contact with at least `min_controller_fanout` (3) and at most
  `max_controller_fanout` (25) advert numbers (two numbers that both once rang the same number
  is chance more often than control; a number in contact with hundreds, such as a taxi firm,
  joins nothing). With a `contacts` column (the pair totals of the call data), a pair counts
  only with at least `min_controller_contacts` (2) contacts.

Every join keeps its reason, so each advert says why it belongs. Each network has its size,
numbers, sites, locations in time order (movement between towns), claimed names and ages (a
claimed age under 18, or words suggesting a child, is flagged and ranked first), and indicators
in words with their points:

- one number for many workers: a number advertising at least 3 different claimed names or
  images of different people (third-party control);
- movement: adverts in at least 3 towns, with the number of moves in time order;
- shared text template: adverts joined by near-duplicate text under at least 2 numbers;
- watchlists: network numbers on a watchlist or in contact with a watchlist number, and
  accounts the adverts name that are on a watchlist (the list named).

Networks are ranked: an indicator of a child first, then points, then size.

A network's id is minted from its scope (region and job) and its smallest advert id; once
stored (every advert import stores the ids of the networks over its job's adverts), its adverts
keep it: `settle_ids` gives a network the stored id of its adverts, so the same network re-found,
or grown by a later dataset of the job, keeps its id (two stored networks joined by a new advert
keep the smaller id).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
from datasketch import MinHash
from datasketch.lsh import _optimal_param
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# Columns of the adverts frame. `number` (E.164 as an integer) and `advert_id` are required; the
# rest may be missing or null.
ADVERT_COLUMNS: dict[str, Any] = {
    "advert_id": pl.String,
    "number": pl.Int64,
    "site": pl.String,
    "posted": pl.Datetime("us", "UTC"),
    "location": pl.String,
    "text": pl.String,
    "image_hash": pl.UInt64,
    "name": pl.String,
    "age": pl.Int32,
    "price": pl.Float64,
    "account": pl.String,
}

REASON_NUMBER = "number"
REASON_TEXT = "text"
REASON_IMAGE = "image"
REASON_CONTROLLER = "controller"
REASON_ACCOUNT = "account"

# Words in an advert that suggest a child. Matched as whole words, case-insensitive; what matched
# is shown so the flag can be challenged.
CHILD_TERMS = (
    "schoolgirl",
    "school girl",
    "underage",
    "under age",
    "barely legal",
    "just turned 18",
    "young teen",
    "teen",
    "lolita",
    "petite young",
    "jailbait",
    "new young",
)
_CHILD_RE = re.compile(r"\b(" + "|".join(re.escape(t) for t in CHILD_TERMS) + r")\b", re.IGNORECASE)
_AGE_IN_TEXT = re.compile(r"\b(1[0-7])\s*(?:yo|y/o|yrs?|years?(?: old)?)\b", re.IGNORECASE)


@dataclass(frozen=True)
class NetworkOptions:
    text_threshold: float = 0.6
    num_perm: int = 24
    shingle: int = 3
    max_image_distance: int = 3
    min_controller_fanout: int = 3
    min_controller_contacts: int = 2
    max_controller_fanout: int = 25
    seed: int = 1
    min_workers: int = 3
    min_towns: int = 3


@dataclass(frozen=True)
class Indicator:
    code: str
    points: int
    text: str


@dataclass
class AdvertNetwork:
    network_id: str
    adverts: list[str]
    numbers: list[int]
    sites: list[str]
    towns: list[str]
    # (first seen there, town) in time order, one entry per move.
    movements: list[tuple[datetime | None, str]]
    names: list[str]
    ages: list[int]
    minor: bool
    minor_reasons: list[str]
    indicators: list[Indicator]
    # advert id -> the reasons it belongs ("shares number +44...", "text like advert X (0.83)").
    reasons: dict[str, list[str]] = field(default_factory=dict)
    # Online accounts the adverts name (`instagram:some.name`).
    accounts: list[str] = field(default_factory=list)
    # The joins found, for a link chart: (advert, other advert, reason, detail), where reason is
    # one of the REASON_ codes and detail the number, account, similarity, bits apart or controller.
    links: list[tuple[str, str, str, str]] = field(default_factory=list)
    # advert id -> its numbers; advert id -> the accounts it names.
    advert_numbers: dict[str, list[int]] = field(default_factory=dict)
    advert_accounts: dict[str, list[str]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.adverts)

    @property
    def score(self) -> int:
        return sum(i.points for i in self.indicators)


@dataclass(frozen=True)
class Watched:
    """What the watchlists say about a network's numbers and accounts."""

    # number -> names of the lists holding it
    numbers: Mapping[int, Iterable[str]]
    # number -> the watchlist numbers it is in contact with
    contacts: Mapping[int, Iterable[int]]
    # account (`platform:handle`) -> names of the lists holding it
    accounts: Mapping[str, Iterable[str]]


def network_scope(region: str, job: str = "") -> str:
    """The scope a network id is minted in: `regions/R`, or the job's name (`regions/R/jobs/ID`)."""
    return job if job.startswith("regions/") else f"regions/{region}" + (f"/jobs/{job}" if job else "")


def mint_id(scope: str, first_advert: str) -> str:
    return "an-" + hashlib.sha256(f"{scope}|{first_advert}".encode()).hexdigest()[:16]


def settle_ids(networks: list[AdvertNetwork], known: Mapping[str, str]) -> list[bool]:
    """Give each network the id its adverts already have in `known` (advert id -> network id;
    the smallest when the network joined two), keeping the minted one otherwise. Returns, per
    network, whether it is new (none of its adverts had one)."""
    fresh = []
    for n in networks:
        ids = {known[a] for a in n.adverts if a in known}
        if ids:
            n.network_id = min(ids)
        fresh.append(not ids)
    return fresh


def _frame(adverts: pl.DataFrame) -> pl.DataFrame:
    missing = {"advert_id", "number"} - set(adverts.columns)
    if missing:
        raise ValueError(f"adverts need columns {sorted(missing)}")
    cols = [
        (pl.col(c) if c in adverts.columns else pl.lit(None)).cast(t).alias(c)
        for c, t in ADVERT_COLUMNS.items()
    ]
    return adverts.select(cols)


def _number_edges(rows: pl.DataFrame) -> pl.DataFrame:
    """Each advert of a number to the number's first advert."""
    return (
        rows.select("doc", "number")
        .unique()
        .with_columns(root=pl.col("doc").min().over("number"))
        .filter(pl.col("doc") != pl.col("root"))
        .select(
            pl.col("doc").alias("a"),
            pl.col("root").alias("b"),
            pl.lit(REASON_NUMBER).alias("reason"),
            pl.col("number").cast(pl.String).alias("detail"),
        )
    )


def _account_edges(rows: pl.DataFrame) -> pl.DataFrame:
    """Each advert naming an account to the account's first advert."""
    return (
        rows.select("doc", "account")
        .drop_nulls()
        .unique()
        .with_columns(root=pl.col("doc").min().over("account"))
        .filter(pl.col("doc") != pl.col("root"))
        .select(
            pl.col("doc").alias("a"),
            pl.col("root").alias("b"),
            pl.lit(REASON_ACCOUNT).alias("reason"),
            pl.col("account").alias("detail"),
        )
    )


def _text_signatures(docs: pl.DataFrame, opts: NetworkOptions) -> tuple[pl.DataFrame, int, int]:
    """MinHash signature per advert with text (columns doc, m0..mN-1), bands and rows per band."""
    bands, rows_per_band = _optimal_param(opts.text_threshold, opts.num_perm, 0.5, 0.5)
    seeds = MinHash(num_perm=opts.num_perm, seed=opts.seed).permutations[0]
    k = opts.shingle
    words = (
        docs.select(
            "doc",
            pl.col("text").str.to_lowercase().str.replace_all(r"[^\p{L}\p{N}]+", " ").str.strip_chars(),
        )
        .filter(pl.col("text").is_not_null() & (pl.col("text") != ""))
        .select("doc", pl.col("text").str.split(" "))
    )
    # Word shingles: each word with the next k-1 of the same advert (a shorter text is one
    # shingle), as k aligned lists exploded together. The lists are padded with k-1 empty words
    # so that a text shorter than k still has its one shingle in every list.
    span = pl.max_horizontal(pl.col("text").list.len() - k + 1, pl.lit(1))
    padded = pl.concat_list(pl.col("text"), pl.lit([""] * (k - 1), dtype=pl.List(pl.String)))
    grams = (
        words.with_columns(padded.alias("text"), span.alias("span"))
        .select("doc", *[pl.col("text").list.slice(i, pl.col("span")).alias(f"w{i}") for i in range(k)])
        .explode([f"w{i}" for i in range(k)])
    )
    full = pl.concat_str([pl.col(f"w{i}") for i in range(k)], separator=" ").str.strip_chars()
    hashed = grams.select("doc", full.hash(seed=opts.seed).alias("h")).unique()
    # One hash function per signature slot: the shingle hash hashed again with the slot's seed
    # (datasketch's permutation parameters for this seed). A linear (a * h + b) mod p over
    # 64-bit columns would need 128-bit products to be a permutation.
    aggs = [pl.col("h").hash(seed=int(seeds[i])).min().alias(f"m{i}") for i in range(opts.num_perm)]
    sig = hashed.group_by("doc").agg(aggs)
    return sig, bands, rows_per_band


def _text_edges(docs: pl.DataFrame, opts: NetworkOptions) -> pl.DataFrame:
    sig, bands, r = _text_signatures(docs, opts)
    if sig.height == 0:
        return pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64, "reason": pl.String, "detail": pl.String})
    m = [f"m{i}" for i in range(opts.num_perm)]
    parts = []
    for band in range(bands):
        cols = m[band * r : (band + 1) * r]
        key = sig.select("doc", pl.struct(cols).hash(seed=band).alias("key"))
        parts.append(
            key.with_columns(root=pl.col("doc").min().over("key"))
            .filter(pl.col("doc") != pl.col("root"))
            .select("doc", "root")
        )
    cand = pl.concat(parts).unique()
    # Keep a candidate only when the signatures agree on enough slots.
    left = cand.join(sig, on="doc")
    right = sig.rename({c: f"r_{c}" for c in m}).rename({"doc": "root"})
    both = left.join(right, on="root")
    agree = pl.sum_horizontal([(pl.col(c) == pl.col(f"r_{c}")).cast(pl.Int32) for c in m]) / opts.num_perm
    kept = both.select("doc", "root", agree.alias("sim")).filter(pl.col("sim") >= opts.text_threshold)
    return kept.select(
        pl.col("doc").cast(pl.Int64).alias("a"),
        pl.col("root").cast(pl.Int64).alias("b"),
        pl.lit(REASON_TEXT).alias("reason"),
        pl.col("sim").round(2).cast(pl.String).alias("detail"),
    )


def _image_edges(docs: pl.DataFrame, opts: NetworkOptions) -> pl.DataFrame:
    imgs = docs.filter(pl.col("image_hash").is_not_null()).select("doc", "image_hash")
    # The same image: each advert to the first with that hash.
    exact = (
        imgs.with_columns(root=pl.col("doc").min().over("image_hash"))
        .filter(pl.col("doc") != pl.col("root"))
        .select(pl.col("doc").alias("a"), pl.col("root").alias("b"), pl.lit(0).alias("dist"))
    )
    edges = [exact]
    d = opts.max_image_distance
    if d > 0:
        # Near-same: between distinct hashes (one advert stands for each), within d bits.
        distinct = imgs.group_by("image_hash").agg(pl.col("doc").min())
        nb = d + 1
        widths = [64 // nb + (1 if i < 64 % nb else 0) for i in range(nb)]
        shift = 0
        for w in widths:
            band = distinct.with_columns(
                key=((pl.col("image_hash") // (1 << shift)) % (1 << w)).cast(pl.UInt64)
            )
            shift += w
            pairs = band.join(band, on="key", suffix="_o").filter(pl.col("doc") < pl.col("doc_o"))
            dist = (pl.col("image_hash") ^ pl.col("image_hash_o")).bitwise_count_ones()
            edges.append(
                pairs.with_columns(dist=dist)
                .filter(pl.col("dist") <= d)
                .select(pl.col("doc_o").alias("a"), pl.col("doc").alias("b"), pl.col("dist").cast(pl.Int32))
            )
    out = pl.concat([e.with_columns(pl.col("dist").cast(pl.Int32)) for e in edges]).unique(["a", "b"])
    return out.select(
        pl.col("a").cast(pl.Int64),
        pl.col("b").cast(pl.Int64),
        pl.lit(REASON_IMAGE).alias("reason"),
        pl.col("dist").cast(pl.String).alias("detail"),
    )


def _controller_edges(
    rows: pl.DataFrame, contacts: pl.DataFrame | None, opts: NetworkOptions
) -> pl.DataFrame:
    empty = pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64, "reason": pl.String, "detail": pl.String})
    if contacts is None or contacts.height == 0:
        return empty
    numbers = rows.select("number").unique()
    if "contacts" in contacts.columns:
        contacts = contacts.filter(pl.col("contacts") >= opts.min_controller_contacts)
    both = pl.concat(
        [
            contacts.select(pl.col("a").alias("advert_number"), pl.col("b").alias("controller")),
            contacts.select(pl.col("b").alias("advert_number"), pl.col("a").alias("controller")),
        ]
    ).unique()
    links = both.join(numbers, left_on="advert_number", right_on="number", how="semi").join(
        numbers, left_on="controller", right_on="number", how="anti"
    )
    links = links.with_columns(fan=pl.len().over("controller")).filter(
        (pl.col("fan") >= opts.min_controller_fanout) & (pl.col("fan") <= opts.max_controller_fanout)
    )
    if links.height == 0:
        return empty
    first_doc = rows.group_by("number").agg(pl.col("doc").min())
    linked = links.join(first_doc, left_on="advert_number", right_on="number").with_columns(
        root=pl.col("doc").min().over("controller")
    )
    return linked.filter(pl.col("doc") != pl.col("root")).select(
        pl.col("doc").cast(pl.Int64).alias("a"),
        pl.col("root").cast(pl.Int64).alias("b"),
        pl.lit(REASON_CONTROLLER).alias("reason"),
        pl.col("controller").cast(pl.String).alias("detail"),
    )


def _components(n: int, edges: pl.DataFrame) -> np.ndarray:
    a = edges["a"].to_numpy()
    b = edges["b"].to_numpy()
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return np.asarray(labels)


def child_indications(text: str | None, age: int | None) -> list[str]:
    """Why an advert suggests a child: a claimed age under 18, an age under 18 in the text, or
    words such as "schoolgirl" (each as found)."""
    found = []
    if age is not None and age < 18:
        found.append(f"claimed age {age}")
    if text:
        found.extend(f"age in text: {m.group(0)}" for m in _AGE_IN_TEXT.finditer(text))
        found.extend(f"words in text: {m.group(0).lower()}" for m in _CHILD_RE.finditer(text))
    return found


def _format_number(key: int) -> str:
    return f"+{key}"


def _describe(reason: str, detail: str, other: str) -> str:
    if reason == REASON_NUMBER:
        return f"shares number {_format_number(int(detail))} with advert {other}"
    if reason == REASON_ACCOUNT:
        return f"shares account {detail} with advert {other}"
    if reason == REASON_TEXT:
        return f"text like advert {other} (estimated similarity {detail})"
    if reason == REASON_IMAGE:
        return (
            f"same image as advert {other}"
            if detail == "0"
            else f"image like advert {other} ({detail} bits apart)"
        )
    return f"number in contact with {_format_number(int(detail))}, as is a number of advert {other}"


def find_networks(
    adverts: pl.DataFrame,
    *,
    contacts: pl.DataFrame | None = None,
    watchlists: Mapping[int, Iterable[str]] | None = None,
    watch_contacts: Mapping[int, Iterable[int]] | None = None,
    account_watchlists: Mapping[str, Iterable[str]] | None = None,
    options: NetworkOptions | None = None,
    min_adverts: int = 2,
    min_numbers: int = 2,
    scope: str = "",
) -> list[AdvertNetwork]:
    """Networks of at least `min_adverts` adverts under at least `min_numbers` numbers, ranked
    (a single number's many adverts are already an advert flag: `AdvertNumberFlagged`).

    `adverts`: one row per advert and number (ADVERT_COLUMNS). `contacts`: pairs of numbers in
    contact in the call data (columns a, b, optionally contacts: how many). `watchlists`: number -> names of lists holding it;
    `watch_contacts`: number -> watchlist numbers it is in contact with; `account_watchlists`:
    account (`platform:handle`) -> names of lists holding it. `scope` goes into the
    network id (a network of the same first advert in the same scope keeps its id).
    """
    opts = options or NetworkOptions()
    rows = _frame(adverts)
    ids = rows.select("advert_id").unique(maintain_order=True).with_row_index("doc")
    ids = ids.with_columns(pl.col("doc").cast(pl.Int64))
    rows = rows.join(ids, on="advert_id")
    docs = rows.group_by("doc").agg(
        pl.col("text").drop_nulls().first(), pl.col("image_hash").drop_nulls().first()
    )
    edges = pl.concat(
        [
            _number_edges(rows),
            _account_edges(rows),
            _text_edges(docs, opts),
            _image_edges(docs, opts),
            _controller_edges(rows, contacts, opts),
        ]
    )
    n = ids.height
    labels = _components(n, edges)
    comp = pl.DataFrame({"doc": np.arange(n, dtype=np.int64), "net": labels.astype(np.int64)})
    rows = rows.join(comp, on="doc")
    sizes = rows.group_by("net").agg(
        pl.col("doc").n_unique().alias("size"), pl.col("number").n_unique().alias("numbers")
    )
    sizes = sizes.filter((pl.col("size") >= min_adverts) & (pl.col("numbers") >= min_numbers))
    if sizes.height == 0:
        return []
    comp = comp.join(sizes.select("net"), on="net", how="semi")
    rows = rows.join(sizes.select("net"), on="net", how="semi")
    edges = edges.join(comp.select(pl.col("doc").alias("a"), "net"), on="a")
    watched = Watched(watchlists or {}, watch_contacts or {}, account_watchlists or {})
    return _summarise(rows, edges, ids, watched, opts, scope)


def _summarise(
    rows: pl.DataFrame,
    edges: pl.DataFrame,
    ids: pl.DataFrame,
    watched: Watched,
    opts: NetworkOptions,
    scope: str,
) -> list[AdvertNetwork]:
    id_of = dict(zip(ids["doc"].to_list(), ids["advert_id"].to_list(), strict=True))
    by_net_edges: dict[int, list[tuple[int, int, str, str]]] = {}
    for net, a, b, reason, detail in edges.select("net", "a", "b", "reason", "detail").iter_rows():
        by_net_edges.setdefault(net, []).append((a, b, reason, detail))
    networks: list[AdvertNetwork] = []
    for (net,), part in rows.sort("posted", nulls_last=True).group_by(["net"], maintain_order=False):
        adverts = sorted(set(part["advert_id"].to_list()))
        numbers = sorted(set(part["number"].to_list()))
        sites = sorted({s for s in part["site"].to_list() if s})
        moves: list[tuple[datetime | None, str]] = []
        for posted, town in part.select("posted", "location").unique(maintain_order=True).iter_rows():
            if town and (not moves or moves[-1][1] != town):
                moves.append((posted, town))
        towns = sorted({t for _, t in moves})
        names = sorted({x for x in part["name"].to_list() if x})
        ages = sorted({x for x in part["age"].to_list() if x is not None})
        minor_reasons: list[str] = []
        for advert_id, text, age in part.select("advert_id", "text", "age").unique().iter_rows():
            minor_reasons.extend(f"advert {advert_id}: {r}" for r in child_indications(text, age))
        minor_reasons = sorted(set(minor_reasons))
        reasons: dict[str, list[str]] = {}
        text_numbers: set[int] = set()
        numbers_of: dict[str, set[int]] = {}
        accounts_of: dict[str, set[str]] = {}
        for advert_id, number, account in part.select("advert_id", "number", "account").iter_rows():
            numbers_of.setdefault(advert_id, set()).add(number)
            if account:
                accounts_of.setdefault(advert_id, set()).add(account)
        links: list[tuple[str, str, str, str]] = []
        for a, b, reason, detail in by_net_edges.get(int(net), []):
            ia, ib = id_of[a], id_of[b]
            links.append((ia, ib, reason, detail))
            reasons.setdefault(ia, []).append(_describe(reason, detail, ib))
            reasons.setdefault(ib, []).append(_describe(reason, detail, ia))
            if reason == REASON_TEXT:
                text_numbers |= numbers_of.get(ia, set()) | numbers_of.get(ib, set())
        accounts = sorted({x for x in part["account"].to_list() if x})
        indicators = _indicators(part, moves, towns, text_numbers, numbers, accounts, watched, opts)
        if minor_reasons:
            indicators.insert(
                0, Indicator("child", 100, "indicator of a child: " + "; ".join(minor_reasons[:5]))
            )
        networks.append(
            AdvertNetwork(
                network_id=mint_id(scope, adverts[0]),
                adverts=adverts,
                numbers=numbers,
                sites=sites,
                towns=towns,
                movements=moves,
                names=names,
                ages=ages,
                minor=bool(minor_reasons),
                minor_reasons=minor_reasons,
                indicators=indicators,
                reasons={k: sorted(set(v)) for k, v in reasons.items()},
                accounts=accounts,
                links=sorted(set(links)),
                advert_numbers={k: sorted(v) for k, v in numbers_of.items()},
                advert_accounts={k: sorted(v) for k, v in accounts_of.items()},
            )
        )
    networks.sort(key=lambda x: (not x.minor, -x.score, -x.size, x.network_id))
    return networks


def _indicators(
    part: pl.DataFrame,
    moves: list[tuple[datetime | None, str]],
    towns: list[str],
    text_numbers: set[int],
    numbers: list[int],
    accounts: list[str],
    watched: Watched,
    opts: NetworkOptions,
) -> list[Indicator]:
    out: list[Indicator] = []
    workers = (
        part.group_by("number")
        .agg(
            pl.col("name").drop_nulls().n_unique().alias("names"),
            pl.col("image_hash").drop_nulls().n_unique().alias("images"),
        )
        .with_columns(workers=pl.max_horizontal("names", "images"))
        .filter(pl.col("workers") >= opts.min_workers)
        .sort("workers", descending=True)
    )
    for number, names, images, w in workers.select("number", "names", "images", "workers").iter_rows():
        out.append(
            Indicator(
                "many_workers",
                10 + min(int(w), 20),
                f"number {_format_number(number)} advertises {names} names and {images} images",
            )
        )
    if len(towns) >= opts.min_towns:
        out.append(
            Indicator(
                "movement",
                5 * min(len(moves) - 1, 10) + 5,
                f"adverts in {len(towns)} towns, {len(moves) - 1} moves: "
                + " -> ".join(t for _, t in moves[:12]),
            )
        )
    if len(text_numbers) >= 2:
        out.append(
            Indicator(
                "shared_template",
                5 + min(len(text_numbers), 20),
                f"near-identical advert text under {len(text_numbers)} numbers",
            )
        )
    listed = [(n, sorted(watched.numbers[n])) for n in numbers if n in watched.numbers]
    for number, lists in listed:
        out.append(Indicator("watchlist", 30, f"number {_format_number(number)} is on {', '.join(lists)}"))
    for account in accounts:
        on = sorted(watched.accounts.get(account, ()))
        if on:
            out.append(Indicator("watchlist", 30, f"account {account} is on {', '.join(on)}"))
    touched = [(n, sorted(watched.contacts[n])) for n in numbers if watched.contacts.get(n)]
    for number, others in touched:
        shown = ", ".join(_format_number(o) for o in others[:3])
        out.append(
            Indicator("watchlist_contact", 20, f"number {_format_number(number)} in contact with {shown}")
        )
    return out


def networks_frame(networks: list[AdvertNetwork]) -> pl.DataFrame:
    """One row per network, for export (CSV cells are escaped by the exporter)."""
    return pl.DataFrame(
        {
            "rank": list(range(1, len(networks) + 1)),
            "network_id": [n.network_id for n in networks],
            "minor": [n.minor for n in networks],
            "score": [n.score for n in networks],
            "adverts": [n.size for n in networks],
            "numbers": [" ".join(_format_number(x) for x in n.numbers) for n in networks],
            "sites": ["; ".join(n.sites) for n in networks],
            "towns": [" -> ".join(t for _, t in n.movements) for n in networks],
            "ages": [" ".join(str(a) for a in n.ages) for n in networks],
            "indicators": ["; ".join(i.text for i in n.indicators) for n in networks],
            "accounts": [" ".join(n.accounts) for n in networks],
        },
        schema_overrides={"rank": pl.Int64, "score": pl.Int64, "adverts": pl.Int64},
    )
