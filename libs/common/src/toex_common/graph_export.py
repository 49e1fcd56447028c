"""Link-chart files shared by the services that export networks (comms' contact network, the
entity neighbourhood): an i2 Analyst's Notebook link table and GraphML.

Spreadsheet safety: a CSV cell starting with = + - @ or a tab/carriage return is prefixed with
an apostrophe, so a spreadsheet shows it as text instead of running it as a formula (OWASP CSV
injection advice)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from xml.etree import ElementTree as ET

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

_GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"


# The columns every i2 link table starts with: the two ends and the link's type (an exporter
# adds its own after them).
I2_LINK_COLUMNS = (
    "Entity1 Identity",
    "Entity1 Type",
    "Entity1 Label",
    "Entity2 Identity",
    "Entity2 Type",
    "Entity2 Label",
    "Link Type",
)


def neutralise(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def link_table_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    """A link table as i2 imports it: a header row, one row per link, every cell neutralised,
    CRLF line ends, UTF-8 with a byte-order mark (Excel and i2 read the encoding from it)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([neutralise(v) for v in row])
    return out.getvalue().encode("utf-8-sig")


def _graphml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    return "string"


def _graphml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def graphml(
    nodes: Iterable[tuple[str, Mapping[str, Any]]],
    edges: Iterable[tuple[str, str, Mapping[str, Any]]],
    directed: bool = False,
) -> bytes:
    """GraphML of nodes (id, attributes) and edges (source, target, attributes); an attribute's
    type is taken from its first value (string, boolean, long, double)."""
    nodes, edges = list(nodes), list(edges)
    keys: dict[tuple[str, str], str] = {}
    types: dict[tuple[str, str], str] = {}
    for scope, items in (("node", [a for _, a in nodes]), ("edge", [a for _, _, a in edges])):
        for attrs in items:
            for name, value in attrs.items():
                if (scope, name) not in keys:
                    keys[(scope, name)] = f"d{len(keys)}"
                    types[(scope, name)] = _graphml_type(value)
    ET.register_namespace("", _GRAPHML_NS)
    root = ET.Element(f"{{{_GRAPHML_NS}}}graphml")
    for (scope, name), key in keys.items():
        ET.SubElement(
            root,
            f"{{{_GRAPHML_NS}}}key",
            {"id": key, "for": scope, "attr.name": name, "attr.type": types[(scope, name)]},
        )
    graph = ET.SubElement(
        root, f"{{{_GRAPHML_NS}}}graph", {"edgedefault": "directed" if directed else "undirected"}
    )
    for node_id, attrs in nodes:
        node = ET.SubElement(graph, f"{{{_GRAPHML_NS}}}node", {"id": node_id})
        for name, value in attrs.items():
            ET.SubElement(node, f"{{{_GRAPHML_NS}}}data", {"key": keys[("node", name)]}).text = _graphml_text(
                value
            )
    for source, target, attrs in edges:
        edge = ET.SubElement(graph, f"{{{_GRAPHML_NS}}}edge", {"source": source, "target": target})
        for name, value in attrs.items():
            ET.SubElement(edge, f"{{{_GRAPHML_NS}}}data", {"key": keys[("edge", name)]}).text = _graphml_text(
                value
            )
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
