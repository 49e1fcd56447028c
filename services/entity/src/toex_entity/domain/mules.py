"""Money mule analysis over a region's relations, every finding with its reasons.

Indicators (the programme's own): several account holders at one address; account holders who
share a phone or device; one person holding several accounts opened close together; clusters of
account holders (often students or on student visas) joined through addresses, phones, devices
and associations to one controller. A finding says which relations made it, never more than the
entities and keys involved; it is intelligence to assess, not a conclusion.

The analysis is a pass over the relations (dicts and a union-find, linear in their number);
networkx is used only inside each cluster found, to name the person most connected to the
holders, so a region of a million persons and two million relations stays a few seconds.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

import networkx as nx
import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from toex_kernel.collector import collector_paused

from toex_entity.domain.relations import PersonAttributes, RelationKind

# Relations whose target several persons can share, and which join them.
SHARED_KINDS = {
    RelationKind.USES_PHONE: "phone",
    RelationKind.LIVES_AT: "address",
    RelationKind.USES_DEVICE: "device",
}


@dataclass(frozen=True)
class Thresholds:
    crowded_address_holders: int = 4  # account holders at one address (households hold some)
    rapid_accounts: int = 3  # accounts held by one person...
    rapid_window_days: int = 90  # ...opened within this many days
    cluster_min_holders: int = 3  # account holders in a cluster worth scoring
    controller_min_holders: int = 3  # holders one person reaches to be named as controller
    cluster_report_score: float = 8.0  # a cluster scoring less is not reported
    cluster_alert_score: float = 15.0  # a cluster at or above this raises MuleClusterDetected
    max_cluster_size: int = 5_000  # persons; a larger component is reported, not analysed


class RelationRow(NamedTuple):
    """What the analysis reads of a relation (a database row of these four columns will do:
    the analysis unpacks, it builds nothing per row)."""

    kind: str  # a RelationKind value
    subject: str
    target: str
    valid_from: date | None = None


@dataclass(frozen=True)
class Finding:
    kind: str  # SHARED_KEY, CROWDED_ADDRESS, RAPID_OPENINGS
    subject: str  # the key (phone, address or device) or the person
    entities: tuple[str, ...]  # persons and accounts involved
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Cluster:
    persons: tuple[str, ...]
    accounts: tuple[str, ...]
    holders: tuple[str, ...]
    controller: str  # "" when no one stands out
    score: float
    alert: bool
    reasons: tuple[str, ...]


def cluster_id(cluster: Cluster) -> str:
    """A cluster's id from its sorted members: the same people found again give the same id."""
    return hashlib.sha256("\n".join(sorted(cluster.persons)).encode()).hexdigest()[:32]


@dataclass
class MuleReport:
    findings: list[Finding] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    oversized: list[int] = field(default_factory=list)  # sizes of components left unanalysed


_CONTROLLER_POINTS = 4.0


def _components(
    sharers: Mapping[tuple[str, str], set[str]], associates: list[tuple[str, str]]
) -> tuple[pd.Index, npt.NDArray[np.int32]]:
    """The persons joined by shared keys and associations (pandas' hash table gives them
    numbers, scipy finds the connected components): the persons, and each one's component."""
    left: list[str] = []
    right: list[str] = []
    for persons in sharers.values():
        it = iter(persons)
        first = next(it)
        for other in it:
            left.append(first)
            right.append(other)
    for a, b in associates:
        left.append(a)
        right.append(b)
    codes, uniques = pd.factorize(np.array(left + right, dtype=object))
    n = len(uniques)
    half = len(left)
    graph = coo_matrix((np.ones(half, dtype=np.int8), (codes[:half], codes[half:])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return pd.Index(uniques), labels.astype(np.int32)


def _is_vulnerable(attrs: PersonAttributes | None) -> bool:
    return attrs is not None and (attrs.student or attrs.visa_type.lower().startswith("student"))


@dataclass
class Grouped:
    """A region's relations as the analysis needs them: each person's accounts (with the day
    each was opened), the phones, devices and addresses at least two persons share (by kind
    name and key), and associations. The service has PostgreSQL group them
    (adapters.relations); `group` does the same in Python."""

    accounts_of: dict[str, list[tuple[str, date | None]]]
    sharers: dict[tuple[str, str], set[str]]
    associates: list[tuple[str, str]]


def group(relations: Iterable[Sequence[Any]]) -> Grouped:
    """Rows of (kind, subject, target, valid from) grouped."""
    accounts_of: dict[str, list[tuple[str, date | None]]] = defaultdict(list)
    by_kind: dict[str, defaultdict[str, list[str]]] = {k.value: defaultdict(list) for k in SHARED_KINDS}
    associates: list[tuple[str, str]] = []
    holds, associated = RelationKind.HOLDS_ACCOUNT.value, RelationKind.ASSOCIATED_WITH.value
    for kind, subject, target, valid_from in relations:
        if kind == holds:
            accounts_of[subject].append((target, valid_from))
        elif (users_by_key := by_kind.get(kind)) is not None:
            users_by_key[target].append(subject)
        elif kind == associated:
            associates.append((subject, target))
    sharers: dict[tuple[str, str], set[str]] = {}
    for kind, users_of in by_kind.items():
        what = SHARED_KINDS[RelationKind(kind)]
        for key, users in users_of.items():
            if len(users) >= 2 and len(persons := set(users)) >= 2:
                sharers[(what, key)] = persons
    return Grouped(dict(accounts_of), sharers, associates)


def analyse(
    relations: Iterable[Sequence[Any]],
    attributes: Mapping[str, PersonAttributes],
    thresholds: Thresholds = Thresholds(),
) -> MuleReport:
    """Findings and scored clusters of a region's relations (rows of kind, subject, target,
    valid from)."""
    return analyse_grouped(group(relations), attributes, thresholds)


def analyse_grouped(
    grouped: Grouped,
    attributes: Mapping[str, PersonAttributes],
    thresholds: Thresholds = Thresholds(),
) -> MuleReport:
    """The cyclic garbage collector is paused meanwhile: the analysis makes millions of small
    containers and no cycles, and the collector's passes over them cost a third of its time at
    a million persons; reference counting still frees everything as usual."""
    with collector_paused():
        return _analyse(grouped, attributes, thresholds)


def _analyse(
    grouped: Grouped, attributes: Mapping[str, PersonAttributes], thresholds: Thresholds
) -> MuleReport:
    accounts_of, sharers, associates = grouped.accounts_of, grouped.sharers, grouped.associates
    report = MuleReport()
    shared_by: dict[str, list[str]] = defaultdict(list)  # holder -> reasons shared
    crowded = thresholds.crowded_address_holders
    for (what, key), persons in sharers.items():
        # Households share an address, so an address is a finding only when crowded; a phone
        # or device shared by two account holders is one already.
        holders = [p for p in persons if p in accounts_of]
        if len(holders) < (crowded if what == "address" else 2):
            continue
        holders.sort()
        accounts = sorted({a for h in holders for a, _ in accounts_of[h]})
        if what == "address":
            reason = f"{len(holders)} account holders at {key} (threshold {crowded})"
            report.findings.append(Finding("CROWDED_ADDRESS", key, (*holders, *accounts), (reason,)))
        else:
            reason = f"{len(holders)} account holders share {what} {key}"
            report.findings.append(Finding("SHARED_KEY", key, (*holders, *accounts), (reason,)))
        for holder in holders:
            shared_by[holder].append(reason)
    rapid: dict[str, str] = {}
    window = thresholds.rapid_window_days
    need = thresholds.rapid_accounts
    for person, held in accounts_of.items():
        if len(held) < need:
            continue
        opened = sorted(d for _, d in held if d is not None)
        for i in range(len(opened) - need + 1):
            span = (opened[i + need - 1] - opened[i]).days
            if span <= window:
                reason = (
                    f"{person} holds {len(held)} accounts, {need} of them opened within {span} days "
                    f"({opened[i].isoformat()} to {opened[i + need - 1].isoformat()})"
                )
                rapid[person] = reason
                held_accounts = sorted(a for a, _ in held)
                report.findings.append(Finding("RAPID_OPENINGS", person, (person, *held_accounts), (reason,)))
                break

    # Components worth scoring: enough holders, and enough evidence that, with a controller
    # found, they could reach the reporting score (most households and circles of friends
    # cannot, and are left without the graph work).
    persons_index, labels = _components(sharers, associates)
    holder_list = [h for h in accounts_of]
    at = persons_index.get_indexer(holder_list)
    holder_labels = np.full(len(at), -1, dtype=np.int64)
    holder_labels[at >= 0] = labels[at[at >= 0]]
    counts = np.bincount(holder_labels[holder_labels >= 0], minlength=1)
    enough = (holder_labels >= 0) & (counts[np.maximum(holder_labels, 0)] >= thresholds.cluster_min_holders)
    holders_of: dict[int, list[str]] = defaultdict(list)
    for i in np.flatnonzero(enough).tolist():
        holders_of[int(holder_labels[i])].append(holder_list[i])
    wanted: dict[int, list[str]] = {}
    for root, holders in holders_of.items():
        bound = 0.5 * len(holders) + _CONTROLLER_POINTS
        bound += sum(2.0 for h in holders if _is_vulnerable(attributes.get(h)) or h in rapid)
        bound += len({r for h in holders for r in shared_by.get(h, ())})
        if bound >= thresholds.cluster_report_score:
            wanted[root] = holders
    wanted_labels = np.fromiter(wanted, dtype=labels.dtype, count=len(wanted))
    members_of: dict[int, list[str]] = defaultdict(list)
    for i in np.flatnonzero(np.isin(labels, wanted_labels)).tolist():
        members_of[int(labels[i])].append(persons_index[i])
    keys_of: dict[int, list[tuple[str, str, set[str]]]] = defaultdict(list)
    firsts = persons_index.get_indexer([next(iter(p)) for p in sharers.values()])
    for ((what, key), persons), root in zip(sharers.items(), labels[firsts].tolist(), strict=True):
        if root in wanted:
            keys_of[root].append((what, key, persons))
    associations_of: dict[int, list[tuple[str, str]]] = defaultdict(list)
    if associates:
        roots = labels[persons_index.get_indexer([a for a, _ in associates])].tolist()
        for (a, b), root in zip(associates, roots, strict=True):
            if root in wanted:
                associations_of[root].append((a, b))
    for root, holders in wanted.items():
        members = members_of[root]
        if len(members) > thresholds.max_cluster_size:
            report.oversized.append(len(members))
            continue
        cluster = _score(
            members,
            holders,
            accounts_of,
            keys_of[root],
            associations_of[root],
            attributes,
            rapid,
            shared_by,
            thresholds,
        )
        if cluster.score >= thresholds.cluster_report_score:
            report.clusters.append(cluster)
    report.clusters.sort(key=lambda c: (-c.score, c.persons))
    return report


def _score(
    members: list[str],
    holders: list[str],
    accounts_of: Mapping[str, list[tuple[str, date | None]]],
    keys: list[tuple[str, str, set[str]]],
    associations: list[tuple[str, str]],
    attributes: Mapping[str, PersonAttributes],
    rapid: Mapping[str, str],
    shared_by: Mapping[str, list[str]],
    thresholds: Thresholds,
) -> Cluster:
    holder_set = set(holders)
    # Who reaches most holders through phones, devices and associations (living at the same
    # address makes no one a controller: households share addresses).
    graph = nx.Graph()
    graph.add_nodes_from(members)
    for what, key, persons in keys:
        if what != "address":
            graph.add_edges_from((f"{what}:{key}", p) for p in persons)
    graph.add_edges_from(associations)
    controller, reached = "", 0
    for person in sorted(members):
        near = nx.single_source_shortest_path_length(graph, person, cutoff=2)
        count = sum(1 for n in near if n in holder_set and n != person)
        if count > reached:
            controller, reached = person, count
    if reached < thresholds.controller_min_holders:
        controller = ""

    # Size alone is weak evidence (households and friends hold accounts): each indicator adds.
    reasons = [
        f"{len(holders)} account holders joined through shared phones, devices, addresses or associations"
    ]
    score = 0.5 * len(holders)
    vulnerable = [h for h in holders if _is_vulnerable(attributes.get(h))]
    if vulnerable:
        score += 2.0 * len(vulnerable)
        reasons.append(f"{len(vulnerable)} of the holders are recorded as students or on student visas")
    if controller:
        score += _CONTROLLER_POINTS
        role = "an account holder" if controller in holder_set else "not an account holder"
        reasons.append(
            f"{controller} ({role}) is connected to {reached} of the holders by phone, device or association"
        )
    fast = [h for h in holders if h in rapid]
    if fast:
        score += 2.0 * len(fast)
        reasons.extend(rapid[h] for h in sorted(fast))
    shared = sorted({r for h in holders for r in shared_by.get(h, ())})
    score += float(len(shared))
    reasons.extend(shared)
    accounts = sorted({a for h in holders for a, _ in accounts_of[h]})
    return Cluster(
        persons=tuple(sorted(members)),
        accounts=tuple(accounts),
        holders=tuple(sorted(holders)),
        controller=controller,
        score=score,
        alert=score >= thresholds.cluster_alert_score,
        reasons=tuple(reasons),
    )
