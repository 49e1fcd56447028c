"""The network picture: groups side by side, nodes apart, a PNG and an SVG that open."""

from __future__ import annotations

import io
import itertools
from datetime import UTC, datetime

import matplotlib.image
import networkx as nx
from toex_comms.adapters import exports
from toex_comms.domain import analysis

WHEN = datetime(2024, 3, 4, 9, tzinfo=UTC)


def edge(a: int, b: int, contacts: int = 1) -> analysis.Edge:
    return analysis.Edge(min(a, b), max(a, b), contacts, 0, 60, contacts, WHEN, WHEN)


def network(targets: list[int], edges: list[analysis.Edge]) -> analysis.Network:
    nodes: dict[int, int] = dict.fromkeys(targets, 0)
    for e in edges:
        nodes[e.a] = nodes.get(e.a, 0) + e.contacts
        nodes[e.b] = nodes.get(e.b, 0) + e.contacts
    return analysis.Network(targets, nodes, edges)


def _distance(p: tuple[float, float], q: tuple[float, float]) -> float:
    return float(((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2) ** 0.5)


def test_groups_do_not_overlap_and_sit_side_by_side() -> None:
    # the demo's shape: a group of six and a lone pair
    net = network(
        [1, 2, 3, 4, 5],
        [
            edge(1, 100, 4),
            edge(2, 100, 4),
            edge(3, 100),
            edge(1, 101),
            edge(2, 101),
            edge(1, 2),
            edge(1, 5),
            edge(4, 200, 2),
        ],
    )
    graph = exports.network_graph(net)
    layout = exports._layout(graph)
    big, small = sorted(nx.connected_components(graph), key=len, reverse=True)

    def box(nodes: set[str]) -> tuple[float, float, float, float]:
        xs, ys = [layout[n][0] for n in nodes], [layout[n][1] for n in nodes]
        return min(xs), max(xs), min(ys), max(ys)

    b, s = box(big), box(small)
    assert s[0] > b[1] or s[1] < b[0]  # apart horizontally: the pair beside the group, not below it
    assert s[2] <= b[3] and s[3] >= b[2]  # and level with it
    points = list(layout.values())
    assert min(_distance(p, q) for p, q in itertools.combinations(points, 2)) > 0.5


def test_targets_sharing_every_contact_are_drawn_apart() -> None:
    targets = list(range(1, 7))
    edges = [edge(t, 1000 + k, 1 + (t + k) % 5) for t in targets for k in range(25)]
    graph = exports.network_graph(network(targets, edges))
    layout = exports._layout(graph)
    spots = [layout[f"+{t}"] for t in targets]
    radius = max(_distance(p, q) for p, q in itertools.combinations(layout.values(), 2)) / 2
    assert min(_distance(p, q) for p, q in itertools.combinations(spots, 2)) > 0.2 * radius


def test_png_and_svg_render() -> None:
    net = network([1, 2], [edge(1, 100, 3), edge(2, 100), edge(1, 2)])
    png = exports.picture(net, "png", {1: "J. SMITH"})
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    height, width = image.shape[:2]
    assert width > 500 and height > 300
    svg = exports.picture(net, "svg", {1: "J. SMITH"}).decode()
    assert svg.startswith("<?xml") and "J. SMITH" in svg and "target" in svg
    empty = exports.picture(network([], []), "png")
    assert empty.startswith(b"\x89PNG")
