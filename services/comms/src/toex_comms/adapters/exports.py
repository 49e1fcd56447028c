"""Files a briefing needs: the contact network as GraphML, an i2 Analyst's Notebook link table
and a picture (networkx, matplotlib); the phone index as CSV and XLSX (xlsxwriter).

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

from toex_comms.analysis import Network

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


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
    "Entity1 Identity",
    "Entity1 Type",
    "Entity1 Label",
    "Entity2 Identity",
    "Entity2 Type",
    "Entity2 Label",
    "Link Type",
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
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(I2_COLUMNS)
    for e in net.edges:
        kind_a = "Target Telephone" if e.a in net.targets else "Telephone"
        kind_b = "Target Telephone" if e.b in net.targets else "Telephone"
        writer.writerow(
            [
                neutralise(v)
                for v in (
                    f"+{e.a}",
                    kind_a,
                    _label(e.a, labels),
                    f"+{e.b}",
                    kind_b,
                    _label(e.b, labels),
                    "Call/Text",
                    e.calls,
                    e.sms,
                    e.duration,
                    e.contacts,
                    e.first.isoformat(),
                    e.last.isoformat(),
                )
            ]
        )
    return out.getvalue().encode("utf-8-sig")


def picture(net: Network, fmt: str, labels: dict[int, str] | None = None) -> bytes:
    """Targets red and large, contacts grey; edge width by contact count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graph = network_graph(net, labels)
    size = max(8.0, min(30.0, 2.0 + graph.number_of_nodes() ** 0.5 * 1.6))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.set_axis_off()
    if graph.number_of_nodes():
        layout = nx.spring_layout(graph, seed=7, k=1.5 / max(1, graph.number_of_nodes()) ** 0.5)
        targets = [n for n, d in graph.nodes(data=True) if d["target"]]
        others = [n for n, d in graph.nodes(data=True) if not d["target"]]
        top = max((d["contacts"] for _, _, d in graph.edges(data=True)), default=1)
        nx.draw_networkx_edges(
            graph,
            layout,
            ax=ax,
            width=[0.5 + 4.0 * d["contacts"] / top for _, _, d in graph.edges(data=True)],
            edge_color="#888888",
            alpha=0.7,
        )
        nx.draw_networkx_nodes(graph, layout, nodelist=others, node_color="#9ecae1", node_size=220, ax=ax)
        nx.draw_networkx_nodes(graph, layout, nodelist=targets, node_color="#d62728", node_size=520, ax=ax)
        nx.draw_networkx_labels(
            graph, layout, labels={n: d["label"] for n, d in graph.nodes(data=True)}, font_size=8, ax=ax
        )
    ax.set_title(
        f"Contact network: {len(net.targets)} targets, {graph.number_of_nodes()} numbers, {graph.number_of_edges()} links"
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
