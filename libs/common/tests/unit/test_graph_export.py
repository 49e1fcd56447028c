"""The shared link-chart writers: a link table's formula-like cells are made text, and GraphML
carries each attribute with its type, for nodes and edges apart."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from toex_common.graph_export import graphml, link_table_csv, neutralise

NS = {"g": "http://graphml.graphdrawing.org/xmlns"}


def test_link_table_neutralises_formulas_and_marks_its_encoding() -> None:
    assert neutralise("=cmd|' /C calc'!A0") == "'=cmd|' /C calc'!A0"
    assert neutralise("Leicester") == "Leicester" and neutralise(3) == 3
    data = link_table_csv(["A", "B"], [("+447700900001", 2), ("x", "@SUM(1)")])
    assert data.startswith(b"\xef\xbb\xbf")
    assert data.decode("utf-8-sig").split("\r\n") == ["A,B", "'+447700900001,2", "x,'@SUM(1)", ""]


def test_graphml_types_attributes_per_scope() -> None:
    root = ET.fromstring(
        graphml(
            [
                ("p1", {"label": "Sam <OKAFOR>", "depth": 0, "start": True}),
                ("t1", {"label": "+44", "depth": 1}),
            ],
            [("p1", "t1", {"kind": "USES_PHONE", "depth": 1.5})],
            directed=True,
        )
    )
    keys = {(k.get("for"), k.get("attr.name")): k for k in root.findall("g:key", NS)}
    assert keys[("node", "depth")].get("attr.type") == "long"
    assert keys[("node", "start")].get("attr.type") == "boolean"
    assert keys[("edge", "depth")].get("attr.type") == "double"
    graph = root.find("g:graph", NS)
    assert graph is not None and graph.get("edgedefault") == "directed"
    label_key = keys[("node", "label")].get("id")
    labels = [d.text for d in graph.findall(f"g:node/g:data[@key='{label_key}']", NS)]
    assert labels == ["Sam <OKAFOR>", "+44"]
    edge = graph.find("g:edge", NS)
    assert edge is not None and (edge.get("source"), edge.get("target")) == ("p1", "t1")
