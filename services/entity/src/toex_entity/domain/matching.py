"""Fellegi-Sunter person matching: comparison features, comparison levels, blocking keys,
scoring and explanations.

Each comparison level is defined twice, side by side: as the SQL condition Splink evaluates
when it estimates the m and u probabilities (DuckDB), and as the Python predicate this
service evaluates in real time against blocked candidates. Both use the same functions
(Jaro-Winkler, Levenshtein, Damerau-Levenshtein) on the same normalised features, and a test
checks that they agree with Splink's own predictions, so the weights Splink estimated are the
weights applied here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler, Levenshtein

from toex_entity.domain import normalise
from toex_entity.domain.records import PersonData

Features = dict[str, Any]
Predicate = Callable[[Features, Features], bool]

# Feature columns, as Splink sees them (one row per record).
FEATURE_COLUMNS = (
    "given_name",
    "surname",
    "given_name_ph",
    "surname_ph",
    "birth_date",
    "postcode",
    "town",
    "street",
    "official_ids",
    "first_official_id",
    "phones",
    "gender",
)


def person_features(
    person: PersonData, identifiers: Sequence[str] = (), phones: Sequence[str] = ()
) -> Features:
    """The comparison features of a person record. Missing values are None (Splink's null)."""
    address = person.addresses[0] if person.addresses else None
    given = normalise.name_key(person.given_name)
    surname = normalise.name_key(person.surname)
    try:
        dob = normalise.birth_date(person.birth_date)
    except normalise.NormaliseError:
        dob = ""
    postcode = normalise.postcode(address.postcode).replace(" ", "") if address else ""
    street = normalise.fold(address.lines[0]) if address and address.lines else ""
    town = normalise.fold(address.town) if address else ""
    ids = sorted(identifiers)
    return {
        "given_name": given or None,
        "surname": surname or None,
        "given_name_ph": normalise.phonetic(given) or None,
        "surname_ph": normalise.phonetic(surname) or None,
        "birth_date": dob or None,
        "postcode": postcode or None,
        "town": town or None,
        "street": street or None,
        "official_ids": ids or None,
        "first_official_id": ids[0].split(":", 1)[1] if ids else None,
        "phones": sorted(phones) or None,
        "gender": person.gender or None,
    }


# --- comparison levels -------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    label: str
    sql: str
    predicate: Predicate
    is_null: bool = False


@dataclass(frozen=True)
class Comparison:
    name: str
    description: str
    columns: tuple[str, ...]
    levels: tuple[Level, ...]
    # Term-frequency adjustment of the exact level (Splink's `tf_adjustment_column`): an exact
    # match on a common value weighs less than one on a rare value.
    tf_column: str | None = None

    def level_of(self, a: Features, b: Features) -> int:
        for index, level in enumerate(self.levels):
            if level.predicate(a, b):
                return index
        return len(self.levels) - 1


def _q(column: str, side: str) -> str:
    return f'"{column}_{side}"'


def null_level(*columns: str) -> Level:
    sql = " OR ".join(f"{_q(c, 'l')} IS NULL OR {_q(c, 'r')} IS NULL" for c in columns)
    predicate: Predicate
    if len(columns) == 1:  # every comparison's first level, for every pair: kept cheap
        (column,) = columns
        predicate = lambda a, b: a[column] is None or b[column] is None  # noqa: E731
    else:
        predicate = lambda a, b: any(a[c] is None or b[c] is None for c in columns)  # noqa: E731
    return Level("missing on either", sql, predicate, True)


def exact(column: str, label: str = "exact") -> Level:
    return Level(label, f"{_q(column, 'l')} = {_q(column, 'r')}", lambda a, b: a[column] == b[column])


def jaro_winkler(column: str, threshold: float) -> Level:
    return Level(
        f"Jaro-Winkler >= {threshold}",
        f"jaro_winkler_similarity({_q(column, 'l')}, {_q(column, 'r')}) >= {threshold}",
        lambda a, b: JaroWinkler.similarity(a[column], b[column]) >= threshold,
    )


def levenshtein(column: str, distance: int) -> Level:
    return Level(
        f"Levenshtein <= {distance}",
        f"levenshtein({_q(column, 'l')}, {_q(column, 'r')}) <= {distance}",
        lambda a, b: Levenshtein.distance(a[column], b[column]) <= distance,
    )


def damerau_levenshtein(column: str, distance: int, label: str) -> Level:
    # At distance 1 the restricted (DuckDB) and the full (rapidfuzz) variants agree.
    return Level(
        label,
        f"damerau_levenshtein({_q(column, 'l')}, {_q(column, 'r')}) <= {distance}",
        lambda a, b: DamerauLevenshtein.distance(a[column], b[column]) <= distance,
    )


def any_shared(column: str, label: str) -> Level:
    return Level(
        label,
        f"len(list_intersect({_q(column, 'l')}, {_q(column, 'r')})) > 0",
        lambda a, b: bool(set(a[column]) & set(b[column])),
    )


def else_level() -> Level:
    return Level("all other", "ELSE", lambda a, b: True)


def _day_month_swapped(a: Features, b: Features) -> bool:
    x, y = a["birth_date"], b["birth_date"]
    return len(x) == 10 == len(y) and x[:4] == y[:4] and x[5:7] == y[8:10] and x[8:10] == y[5:7]


DAY_MONTH_SWAPPED_SQL = (
    'length("birth_date_l") = 10 AND length("birth_date_r") = 10 '
    'AND substr("birth_date_l", 1, 4) = substr("birth_date_r", 1, 4) '
    'AND substr("birth_date_l", 6, 2) = substr("birth_date_r", 9, 2) '
    'AND substr("birth_date_l", 9, 2) = substr("birth_date_r", 6, 2)'
)


def _name_levels(column: str) -> tuple[Level, ...]:
    return (
        null_level(column),
        exact(column),
        jaro_winkler(column, 0.92),
        jaro_winkler(column, 0.8),
        exact(f"{column}_ph", "same Metaphone code"),
        else_level(),
    )


COMPARISONS: tuple[Comparison, ...] = (
    Comparison(
        "given_name", "given name", ("given_name", "given_name_ph"), _name_levels("given_name"), "given_name"
    ),
    Comparison("surname", "surname", ("surname", "surname_ph"), _name_levels("surname"), "surname"),
    Comparison(
        "birth_date",
        "date of birth",
        ("birth_date",),
        (
            null_level("birth_date"),
            exact("birth_date"),
            damerau_levenshtein("birth_date", 1, "one digit wrong or two transposed"),
            Level("day and month swapped", DAY_MONTH_SWAPPED_SQL, _day_month_swapped),
            levenshtein("birth_date", 2),
            else_level(),
        ),
    ),
    Comparison(
        "postcode",
        "postcode",
        ("postcode",),
        (null_level("postcode"), exact("postcode"), levenshtein("postcode", 1), else_level()),
        "postcode",
    ),
    Comparison(
        "town",
        "town",
        ("town",),
        (null_level("town"), exact("town"), jaro_winkler("town", 0.88), else_level()),
    ),
    Comparison(
        "street",
        "street address",
        ("street",),
        (
            null_level("street"),
            exact("street"),
            jaro_winkler("street", 0.9),
            jaro_winkler("street", 0.75),
            else_level(),
        ),
    ),
    Comparison(
        "official_id",
        "official identifier",
        ("official_ids", "first_official_id"),
        (
            null_level("official_ids"),
            any_shared("official_ids", "same identifier"),
            damerau_levenshtein("first_official_id", 1, "one character wrong or two transposed"),
            levenshtein("first_official_id", 2),
            else_level(),
        ),
    ),
    Comparison(
        "phone",
        "phone number",
        ("phones",),
        (null_level("phones"), any_shared("phones", "same number"), else_level()),
    ),
    Comparison(
        "gender",
        "gender",
        ("gender",),
        (null_level("gender"), exact("gender"), else_level()),
    ),
)


# --- blocking ---------------------------------------------------------------------------


def _name_pair(f: Features) -> str:
    gn, sn = f["given_name_ph"], f["surname_ph"]
    if not (gn and sn):
        return ""
    first, second = sorted((gn, sn))  # also meets records with the names swapped
    return f"{first}:{second}"


def _other_keys(f: Features) -> list[str]:
    keys: list[str] = []
    gn, sn = f["given_name_ph"], f["surname_ph"]
    dob, pc = f["birth_date"], f["postcode"]
    for tag, name in (("s", sn), ("g", gn)):
        if name and dob:
            keys.append(f"{tag}d:{name}:{dob}")
        if name and pc:
            keys.append(f"{tag}p:{name}:{pc}")
    if dob and pc:
        keys.append(f"dp:{dob}:{pc}")
    for ident in f["official_ids"] or ():
        keys.append(f"i:{ident}")
    # Address keys: a record whose names and date of birth both carry errors (or are missing)
    # still meets its match at the same street (with its house number) in the same town or
    # postcode, or under the same surname in the same town.
    street, town = f.get("street"), f.get("town")
    if street and any(ch.isdigit() for ch in street):
        if town:
            keys.append(f"at:{street}:{town}")
        if pc:
            keys.append(f"ap:{street}:{pc}")
    if sn and town:
        keys.append(f"st:{sn}:{town}")
    return keys


def blocking_keys(f: Features) -> list[str]:
    """Keys under which a person record is indexed; a new record looks up its query_keys.
    Apart from the name pair, each key needs two of names, date of birth and postcode to have
    survived, so a record with any single error still meets its match.

    The name pair comes three ways so that common names do not make large blocks: with the
    year of birth (`n:..:YYYY`, what records with a date of birth look up), bare (`n:`, looked
    up only by records without one) and, for records without a date of birth, `n0:` (looked up
    by records with one)."""
    pair = _name_pair(f)
    keys = []
    if pair:
        dob = f["birth_date"]
        keys.append(f"n:{pair}")
        keys.append(f"n:{pair}:{dob[:4]}" if dob else f"n0:{pair}")
    return keys + _other_keys(f)


def query_keys(f: Features) -> list[str]:
    pair = _name_pair(f)
    keys = []
    if pair:
        dob = f["birth_date"]
        keys.extend([f"n:{pair}:{dob[:4]}", f"n0:{pair}"] if dob else [f"n:{pair}"])
    return keys + _other_keys(f)


# --- model and scoring ------------------------------------------------------------------

# Every comparison's levels start with the null level, then the exact (closest) one.
EXACT_LEVEL = 1


@dataclass(frozen=True)
class LevelWeights:
    m: float
    u: float

    @property
    def bayes_factor(self) -> float:
        return self.m / self.u

    @property
    def weight(self) -> float:
        return math.log2(self.bayes_factor)


@dataclass(frozen=True)
class Thresholds:
    """Probabilities: link at or above `auto_link`, queue for review at or above `review`."""

    auto_link: float = 0.99
    review: float = 0.5


@dataclass(frozen=True)
class MatchModel:
    """Fellegi-Sunter parameters: the prior and, per comparison, m and u per level (the null
    level has none: it contributes nothing)."""

    version: str
    prior: float  # probability that two random records match
    levels: Mapping[str, tuple[LevelWeights | None, ...]]
    thresholds: Thresholds = field(default_factory=Thresholds)
    trained_on: str = ""
    # Term frequencies per comparison with a `tf_column` (value -> share of the stored records'
    # non-null values), from the records the model was estimated on; only values more frequent
    # than the comparison's floor are kept (`tf_floor`: a value not listed counts as the floor).
    term_frequencies: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    tf_floor: Mapping[str, float] = field(default_factory=dict)

    @property
    def prior_weight(self) -> float:
        return math.log2(self.prior / (1 - self.prior))

    def tf_weight(self, comparison: str, value: Any) -> float:
        """The term-frequency adjustment (log2) of an exact match on `value`, as Splink makes
        it: (u of the exact level / the value's frequency, at least the floor)."""
        floor = self.tf_floor.get(comparison)
        weights = self.levels[comparison][EXACT_LEVEL]
        if floor is None or weights is None:
            return 0.0
        tf = self.term_frequencies.get(comparison, {}).get(value, 0.0)
        return math.log2(weights.u / max(tf, floor))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "prior": self.prior,
            "trained_on": self.trained_on,
            "thresholds": {"auto_link": self.thresholds.auto_link, "review": self.thresholds.review},
            "levels": {
                name: [None if w is None else [w.m, w.u] for w in weights]
                for name, weights in self.levels.items()
            },
            "term_frequencies": {name: dict(table) for name, table in self.term_frequencies.items()},
            "tf_floor": dict(self.tf_floor),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MatchModel:
        levels = {
            name: _upgraded(
                name, tuple(None if w is None else LevelWeights(float(w[0]), float(w[1])) for w in weights)
            )
            for name, weights in data["levels"].items()
        }
        thresholds = Thresholds(**data.get("thresholds", {}))
        return cls(
            data["version"],
            float(data["prior"]),
            levels,
            thresholds,
            data.get("trained_on", ""),
            {name: dict(table) for name, table in data.get("term_frequencies", {}).items()},
            {name: float(v) for name, v in data.get("tf_floor", {}).items()},
        )


# Levels added since models were first stored: (comparison, level count before, the level
# inserted, the level whose weights it takes). A model estimated before gives the new level the
# weights of the level its pairs fell in until then, so it scores every pair as it did.
LEVELS_ADDED = (("official_id", 4, 2, 2),)


def _upgraded(name: str, weights: tuple[LevelWeights | None, ...]) -> tuple[LevelWeights | None, ...]:
    for comparison, before, at, source in LEVELS_ADDED:
        if name == comparison and len(weights) == before:
            weights = (*weights[:at], weights[source], *weights[at:])
    return weights


@dataclass(frozen=True)
class Contribution:
    comparison: str
    level: str
    weight: float
    bayes_factor: float
    value_a: str
    value_b: str


@dataclass(frozen=True)
class Score:
    prior_weight: float
    contributions: tuple[Contribution, ...]

    @property
    def weight(self) -> float:
        return self.prior_weight + sum(c.weight for c in self.contributions)

    @property
    def probability(self) -> float:
        return probability(self.weight)


def probability(weight: float) -> float:
    if weight > 60:
        return 1.0
    if weight < -60:
        return 0.0
    odds = 2.0**weight
    return odds / (1 + odds)


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def score(model: MatchModel, a: Features, b: Features, *, detail: bool = True) -> Score:
    contributions = []
    for comparison in COMPARISONS:
        index = comparison.level_of(a, b)
        weights = model.levels[comparison.name][index]
        level = comparison.levels[index]
        if weights is None:
            w, bf = 0.0, 1.0
        else:
            w, bf = weights.weight, weights.bayes_factor
            if index == EXACT_LEVEL and comparison.tf_column is not None:
                adjust = model.tf_weight(comparison.name, a[comparison.tf_column])
                w, bf = w + adjust, bf * 2.0**adjust
        column = comparison.columns[0]
        contributions.append(
            Contribution(
                comparison.name,
                level.label,
                w,
                bf,
                _show(a[column]) if detail else "",
                _show(b[column]) if detail else "",
            )
        )
    return Score(model.prior_weight, tuple(contributions))


def fast_weight(
    model_weights: Sequence[Sequence[float]], prior_weight: float, a: Features, b: Features
) -> float:
    """The match weight alone (no explanation objects): the hot path of blocking. With a
    `WeightTable`, exact matches carry their term-frequency adjustments."""
    total = prior_weight
    adjustments = model_weights.tf if isinstance(model_weights, WeightTable) else {}
    for index, (comparison, weights) in enumerate(zip(COMPARISONS, model_weights, strict=True)):
        level = comparison.level_of(a, b)
        total += weights[level]
        if level == EXACT_LEVEL and index in adjustments:
            table, default = adjustments[index]
            total += table.get(a[comparison.tf_column], default)  # type: ignore[index]
    return total


def weight_at_least(
    table: WeightTable, prior_weight: float, a: Features, b: Features, floor: float
) -> float | None:
    """`fast_weight`, or None as soon as the pair cannot reach `floor` whatever the comparisons
    not yet made find: a bulk resolution drops every pair under the review threshold, and most
    pairs a large block brings together (a common surname in a town) are told apart by their
    first two or three comparisons. The comparisons go in `table.order` (most telling first);
    a pair that is not dropped gets exactly `fast_weight`'s sum, in the same order."""
    adjustments = table.tf
    # Each comparison's level weight and term-frequency adjustment (None: not adjusted), kept
    # to be summed again in fast_weight's order: floating-point sums depend on the order.
    parts: list[tuple[float, float | None]] = [(0.0, None)] * len(COMPARISONS)
    total = prior_weight
    for position, index in enumerate(table.order):
        comparison = COMPARISONS[index]
        level = comparison.level_of(a, b)
        weight, adjustment = table[index][level], None
        if level == EXACT_LEVEL and index in adjustments:
            values, default = adjustments[index]
            adjustment = values.get(a[comparison.tf_column], default)  # type: ignore[index]
        parts[index] = (weight, adjustment)
        total += weight + (adjustment or 0.0)
        if total + table.reach[position] < floor:
            return None
    exact_sum = prior_weight
    for weight, adjustment in parts:
        exact_sum += weight
        if adjustment is not None:
            exact_sum += adjustment
    return exact_sum


def review_floor(review: float) -> float:
    """The weight under which a pair's probability is below `review` (a little below it, so
    rounding never drops a pair that reaches it); minus infinity when nothing can be dropped."""
    if not 0.0 < review < 1.0:
        return -math.inf
    return math.log2(review / (1.0 - review)) - 1e-6


class WeightTable(list[list[float]]):
    """Match weights per comparison and level, with the term-frequency adjustments of exact
    matches (comparison index -> (weight by value, weight of a value not listed)).

    `order`: the comparisons by how far their outcome can move a pair's weight (highest first);
    `reach[i]`: the most the comparisons after position i of `order` can still add."""

    tf: dict[int, tuple[dict[str, float], float]]
    order: tuple[int, ...]
    reach: tuple[float, ...]


def weight_table(model: MatchModel) -> WeightTable:
    table = WeightTable([[0.0 if w is None else w.weight for w in model.levels[c.name]] for c in COMPARISONS])
    table.tf = {}
    for index, c in enumerate(COMPARISONS):
        if c.tf_column is None or c.name not in model.tf_floor:
            continue
        values = model.term_frequencies.get(c.name, {})
        table.tf[index] = (
            {v: model.tf_weight(c.name, v) for v in values},
            model.tf_weight(c.name, None),
        )
    highest, lowest = [], []
    for index, weights in enumerate(table):
        best = max(weights)
        if index in table.tf:
            values, default = table.tf[index]
            best = max(best, weights[EXACT_LEVEL] + max([default, *values.values()]))
        highest.append(best)
        lowest.append(min(weights))
    table.order = tuple(sorted(range(len(table)), key=lambda i: -(highest[i] - lowest[i])))
    table.reach = tuple(
        sum(highest[i] for i in table.order[position + 1 :]) for position in range(len(table))
    )
    return table


def explain_text(s: Score, decision: str) -> str:
    """A readable account of a comparison, strongest evidence first."""
    parts = []
    for c in sorted(s.contributions, key=lambda c: -abs(c.weight)):
        if c.level == "missing on either":
            parts.append(f"{c.comparison}: missing on one record (no evidence)")
            continue
        direction = "for" if c.weight > 0 else "against"
        values = f" ({c.value_a!r} vs {c.value_b!r})" if c.value_a or c.value_b else ""
        parts.append(f"{c.comparison}: {c.level}{values}, {c.weight:+.2f} {direction} a match")
    return (
        f"Match weight {s.weight:.2f} (probability {s.probability:.4f}; prior {s.prior_weight:+.2f}): "
        f"{decision}. " + "; ".join(parts) + "."
    )
