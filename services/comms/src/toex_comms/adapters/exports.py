"""Files a briefing needs: the contact network as GraphML, an i2 Analyst's Notebook link table
and a picture (networkx, matplotlib); the phone index as CSV and XLSX (xlsxwriter); advert
networks as GraphML, an i2 link table and CSV (toex_common.graph_export, as the entity service's).

Spreadsheet safety: a CSV cell starting with = + - @ or a tab/carriage return is prefixed with
an apostrophe, so a spreadsheet shows it as text instead of running it as a formula (OWASP CSV
injection advice). XLSX cells are written as strings, which Excel never evaluates."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
from toex_common import graph_export
from toex_common.graph_export import FORMULA_START, I2_LINK_COLUMNS, link_table_csv, neutralise

from toex_comms.domain import advert_networks as adverts
from toex_comms.domain.advert_networks import AdvertNetwork
from toex_comms.domain.analysis import Network
from toex_comms.domain.commands import ExportFormat

__all__ = ["FORMULA_START", "neutralise"]


def _label(number: int, labels: dict[int, str]) -> str:
    extra = labels.get(number, "")
    return f"+{number}" + (f" ({extra})" if extra else "")


def network_graph(net: Network, labels: dict[int, str] | None = None) -> nx.Graph:
    labels = labels or {}
    graph = nx.Graph()
    for number, events in net.nodes.items():
        graph.add_node(
            f"+{number}", label=_label(number, labels), target=number in net.targets, events=int(events)
        )
    for e in net.edges:
        graph.add_edge(
            f"+{e.a}",
            f"+{e.b}",
            calls=e.calls,
            sms=e.sms,
            duration_seconds=e.duration,
            contacts=e.contacts,
            first_contact=e.first.isoformat(),
            last_contact=e.last.isoformat(),
        )
    return graph


def graphml(net: Network, labels: dict[int, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    nx.write_graphml(network_graph(net, labels), buffer)
    return buffer.getvalue()


I2_COLUMNS = [
    *I2_LINK_COLUMNS,
    "Calls",
    "Texts",
    "Duration Seconds",
    "Contacts",
    "First Contact",
    "Last Contact",
]


def i2_link_table(net: Network, labels: dict[int, str] | None = None) -> bytes:
    """One row per link: i2 Analyst's Notebook imports this with a link-table import spec
    (Entity1/Entity2 identities as 'Telephone' entities, attributes on the link)."""
    labels = labels or {}

    def kind(number: int) -> str:
        return "Target Telephone" if number in net.targets else "Telephone"

    return link_table_csv(
        I2_COLUMNS,
        (
            (
                f"+{e.a}",
                kind(e.a),
                _label(e.a, labels),
                f"+{e.b}",
                kind(e.b),
                _label(e.b, labels),
                "Call/Text",
                e.calls,
                e.sms,
                e.duration,
                e.contacts,
                e.first.isoformat(),
                e.last.isoformat(),
            )
            for e in net.edges
        ),
    )


# An advert network's link chart: the i2 entity type of each kind of node, and each join's link type.
ADVERT_NODE_TYPES = {
    "network": "Advert Network",
    "advert": "Advert",
    "number": "Telephone",
    "account": "Online Account",
}
ADVERT_LINK_TYPES = {
    adverts.REASON_NUMBER: "Shares Number",
    adverts.REASON_ACCOUNT: "Shares Account",
    adverts.REASON_TEXT: "Near-duplicate Text",
    adverts.REASON_IMAGE: "Same or Near-same Image",
    adverts.REASON_CONTROLLER: "Common Controller",
}
Node = tuple[str, dict[str, Any]]
Edge = tuple[str, str, dict[str, Any]]


def advert_network_graph(networks: Sequence[AdvertNetwork]) -> tuple[list[Node], list[Edge]]:
    """Nodes (networks, adverts, numbers, accounts) and edges (an advert's network, numbers and
    accounts; each join between two adverts with its reason and detail)."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[Edge] = []

    def node(node_id: str, kind: str, label: str, **extra: Any) -> str:
        nodes.setdefault(node_id, {"kind": kind, "label": label, **extra})
        return node_id

    for rank, n in enumerate(networks, start=1):
        net = node(
            f"network:{n.network_id}",
            "network",
            n.network_id,
            rank=rank,
            child=n.minor,
            score=n.score,
            adverts=n.size,
            indicators="; ".join(i.text for i in n.indicators),
        )
        for advert in n.adverts:
            a = node(f"advert:{advert}", "advert", advert, reasons="; ".join(n.reasons.get(advert, [])))
            edges.append((a, net, {"link": "Member Of", "network": n.network_id, "detail": ""}))
            for number in n.advert_numbers.get(advert, []):
                phone = node(f"+{number}", "number", f"+{number}")
                edges.append((a, phone, {"link": "Advertises", "network": n.network_id, "detail": ""}))
            for account in n.advert_accounts.get(advert, []):
                acc = node(f"account:{account}", "account", account)
                edges.append((a, acc, {"link": "Names Account", "network": n.network_id, "detail": ""}))
        for a_id, b_id, reason, detail in n.links:
            shown = f"+{detail}" if reason in (adverts.REASON_NUMBER, adverts.REASON_CONTROLLER) else detail
            edges.append(
                (
                    f"advert:{a_id}",
                    f"advert:{b_id}",
                    {"link": ADVERT_LINK_TYPES.get(reason, reason), "network": n.network_id, "detail": shown},
                )
            )
    return list(nodes.items()), edges


def advert_networks_graphml(networks: Sequence[AdvertNetwork]) -> bytes:
    return graph_export.graphml(*advert_network_graph(networks))


def advert_networks_i2(networks: Sequence[AdvertNetwork]) -> bytes:
    """One row per edge of `advert_network_graph`: i2 imports it as a link table."""
    found, edges = advert_network_graph(networks)
    attrs = dict(found)

    def end(node_id: str) -> tuple[str, str, str]:
        return node_id, ADVERT_NODE_TYPES[attrs[node_id]["kind"]], attrs[node_id]["label"]

    return link_table_csv(
        [*I2_LINK_COLUMNS, "Network", "Detail"],
        ((*end(a), *end(b), e["link"], e["network"], e["detail"]) for a, b, e in edges),
    )


def advert_networks_csv(networks: Sequence[AdvertNetwork]) -> bytes:
    """One row per network, cells neutralised as in every CSV exported."""
    frame = adverts.networks_frame(list(networks))
    return link_table_csv(frame.columns, frame.iter_rows())


TARGET_COLOUR = "#d62728"
OTHER_COLOUR = "#6baed6"
EDGE_LABELS_MAX = 60
LABELS_MAX = 150


def _layout(graph: nx.Graph) -> dict[Any, tuple[float, float]]:
    """Each connected component laid out on its own (Kamada-Kawai when small, spring when
    large), sized by its node count, then the components placed in rows, largest first: no
    empty half-picture between a big group and a lone pair."""
    components = sorted(nx.connected_components(graph), key=lambda c: (-len(c), sorted(c)[0]))
    radii = [0.6 + 1.1 * len(c) ** 0.5 for c in components]
    widths = [2 * r + 2.4 for r in radii]
    row_width = max([*widths[:1], 1.8 * sum(w * w for w in widths) ** 0.5])
    placed: dict[Any, tuple[float, float]] = {}
    x = y = row_height = 0.0
    for nodes, radius, width in zip(components, radii, widths, strict=True):
        sub = graph.subgraph(nodes)
        if len(nodes) == 1:
            local = {next(iter(nodes)): (0.0, 0.0)}
        elif len(nodes) <= 60:
            local = nx.kamada_kawai_layout(sub, scale=radius)
            if _crowded(local, radius):
                # Many targets sharing the same contacts fall on top of each other: rings
                # instead, targets inside, the numbers they call around them.
                inner = sorted(n for n in nodes if graph.nodes[n]["target"])
                outer = sorted(n for n in nodes if not graph.nodes[n]["target"])
                local = nx.shell_layout(sub, [inner, outer] if inner and outer else None, scale=radius)
        else:
            local = nx.spring_layout(sub, seed=7, scale=radius, k=1.5 / len(nodes) ** 0.5)
        if x > 0 and x + width > row_width:
            x, y, row_height = 0.0, y - row_height, 0.0
        for node, (px, py) in local.items():
            placed[node] = (x + width / 2 + float(px), y - radius - 0.9 + float(py))
        x += width
        row_height = max(row_height, 2 * radius + 1.8)
    return placed


def _crowded(layout: dict[Any, Any], radius: float) -> bool:
    points = [(float(x), float(y)) for x, y in layout.values()]
    gap = min(
        ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5
        for i, a in enumerate(points)
        for b in points[i + 1 :]
    )
    return gap < 0.15 * radius


def picture(net: Network, fmt: str, labels: dict[int, str] | None = None) -> bytes:
    """Targets red and large, other numbers blue; each line's width is the number of contacts,
    written on it while the picture has few enough lines to read them (calls, texts and
    durations are in the GraphML and i2 exports)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    graph = network_graph(net, labels)
    count = graph.number_of_nodes()
    size = max(8.0, min(30.0, 3.0 + count**0.5 * 1.6))
    fig, ax = plt.subplots(figsize=(size, size * 0.75))
    ax.set_axis_off()
    if count:
        layout = _layout(graph)
        targets = [n for n, d in graph.nodes(data=True) if d["target"]]
        others = [n for n, d in graph.nodes(data=True) if not d["target"]]
        top = max((d["contacts"] for _, _, d in graph.edges(data=True)), default=1)
        nx.draw_networkx_edges(
            graph,
            layout,
            ax=ax,
            width=[1.0 + 5.0 * d["contacts"] / top for _, _, d in graph.edges(data=True)],
            edge_color="#7f7f7f",
            alpha=0.6,
        )
        nx.draw_networkx_nodes(graph, layout, nodelist=others, node_color=OTHER_COLOUR, node_size=260, ax=ax)
        nx.draw_networkx_nodes(
            graph,
            layout,
            nodelist=targets,
            node_color=TARGET_COLOUR,
            node_size=600,
            ax=ax,
            edgecolors="black",
        )
        if graph.number_of_edges() <= EDGE_LABELS_MAX:
            nx.draw_networkx_edge_labels(
                graph,
                layout,
                edge_labels={(u, v): str(d["contacts"]) for u, v, d in graph.edges(data=True)},
                font_size=7,
                font_color="#404040",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                ax=ax,
            )
        if count <= LABELS_MAX:
            for node, (px, py) in layout.items():
                data = graph.nodes[node]
                ax.annotate(
                    data["label"],
                    (px, py),
                    xytext=(0, -15 if data["target"] else -12),
                    textcoords="offset points",
                    ha="center",
                    va="top",
                    fontsize=8,
                    fontweight="bold" if data["target"] else "normal",
                    # Labels are users' text: a `$` is a dollar sign, never mathematical notation
                    # (which rendered what nobody wrote, or failed the export).
                    parse_math=False,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
                )
        xs = [p[0] for p in layout.values()]
        ys = [p[1] for p in layout.values()]
        ax.set_xlim(min(xs) - 1.5, max(xs) + 1.5)
        ax.set_ylim(min(ys) - 1.2, max(ys) + 0.8)
        ax.set_aspect("equal")
        ax.legend(
            handles=[
                Line2D([], [], marker="o", ls="", ms=12, mfc=TARGET_COLOUR, mec="black", label="target"),
                Line2D(
                    [], [], marker="o", ls="", ms=9, mfc=OTHER_COLOUR, mec=OTHER_COLOUR, label="other number"
                ),
                Line2D([], [], color="#7f7f7f", lw=3, label="contacts (line width and number)"),
            ],
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=3,
            frameon=False,
            fontsize=8,
        )
    ax.set_title(
        f"Contact network: {len(net.targets)} targets, {count} numbers, {graph.number_of_edges()} links"
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, bbox_inches="tight", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


INDEX_COLUMNS = [
    "number",
    "attributed_to",
    "events",
    "calls",
    "texts",
    "duration_seconds",
    "first_seen",
    "last_seen",
]


def index_csv(rows: Iterable[Sequence[Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(INDEX_COLUMNS)
        for row in rows:
            writer.writerow([neutralise(v) for v in row])


def index_xlsx(rows: Iterable[Sequence[Any]], path: Path) -> None:
    import xlsxwriter

    # constant_memory streams rows to disk, so a large index does not sit in memory.
    book = xlsxwriter.Workbook(
        str(path), {"constant_memory": True, "strings_to_formulas": False, "strings_to_urls": False}
    )
    sheet = book.add_worksheet("phone index")
    bold = book.add_format({"bold": True})
    for col, name in enumerate(INDEX_COLUMNS):
        sheet.write_string(0, col, name, bold)
    for r, row in enumerate(rows, start=1):
        for col, value in enumerate(row):
            if isinstance(value, int | float) and not isinstance(value, bool):
                sheet.write_number(r, col, value)
            else:
                sheet.write_string(r, col, "" if value is None else str(value))
    book.close()


class FileExporter:
    """The Exporter port: each format written to the file given."""

    def network(self, net: Network, labels: dict[int, str], fmt: ExportFormat, path: Path) -> None:
        if fmt is ExportFormat.GRAPHML:
            data = graphml(net, labels)
        elif fmt is ExportFormat.I2_LINK_CSV:
            data = i2_link_table(net, labels)
        elif fmt in (ExportFormat.SVG, ExportFormat.PNG):
            data = picture(net, fmt.value, labels)
        else:
            raise ValueError(f"{fmt} is not a network format")
        path.write_bytes(data)

    def index(self, rows: Sequence[Sequence[Any]], fmt: ExportFormat, path: Path) -> None:
        if fmt is ExportFormat.INDEX_CSV:
            index_csv(rows, path)
        elif fmt is ExportFormat.INDEX_XLSX:
            index_xlsx(rows, path)
        else:
            raise ValueError(f"{fmt} is not an index format")

    def advert_networks(self, networks: list[AdvertNetwork], fmt: ExportFormat, path: Path) -> None:
        writers = {
            ExportFormat.ADVERT_NETWORKS_GRAPHML: advert_networks_graphml,
            ExportFormat.ADVERT_NETWORKS_I2_LINK_CSV: advert_networks_i2,
            ExportFormat.ADVERT_NETWORKS_CSV: advert_networks_csv,
        }
        if fmt not in writers:
            raise ValueError(f"{fmt} is not an advert network format")
        path.write_bytes(writers[fmt](networks))
