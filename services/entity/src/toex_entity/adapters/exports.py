"""A neighbourhood as a link chart: GraphML and an i2 Analyst's Notebook link table, written by
the same shared writers as comms' contact network (toex_common.graph_export)."""

from __future__ import annotations

from toex_common.graph_export import I2_LINK_COLUMNS, graphml, link_table_csv

from toex_entity.domain.relations import Neighbourhood, reason

I2_COLUMNS = [
    *I2_LINK_COLUMNS,
    "Reason",
    "Source System",
    "Source Record",
    "Grading",
    "Valid From",
    "Valid To",
    "Region",
]

# i2 entity types for the node types.
_I2_TYPE = {
    "PERSON": "Person",
    "PHONE": "Telephone",
    "VEHICLE": "Vehicle",
    "ONLINE_ACCOUNT": "Online Account",
    "EMAIL": "Email Address",
    "BANK_ACCOUNT": "Bank Account",
    "ADDRESS": "Address",
}


def neighbourhood_graphml(graph: Neighbourhood) -> bytes:
    return graphml(
        ((n.id, {"node_type": n.node_type, "label": n.label, "depth": n.depth}) for n in graph.nodes),
        (
            (
                s.relation.subject,
                s.relation.target,
                {
                    "kind": s.relation.kind.value,
                    "reason": reason(s),
                    "source_system": s.relation.source_system,
                    "source_record_id": s.relation.source_record_id,
                    "grading": str(s.relation.grading),
                    "valid_from": s.relation.valid_from.isoformat() if s.relation.valid_from else "",
                    "valid_to": s.relation.valid_to.isoformat() if s.relation.valid_to else "",
                    "region": s.relation.region,
                },
            )
            for s in graph.edges
        ),
        directed=True,
    )


def neighbourhood_i2(graph: Neighbourhood) -> bytes:
    nodes = {n.id: n for n in graph.nodes}

    def end(node_id: str) -> tuple[str, str, str]:
        node = nodes[node_id]
        return node.id, _I2_TYPE.get(node.node_type, "Entity"), node.label or node.id

    return link_table_csv(
        I2_COLUMNS,
        (
            (
                *end(s.relation.subject),
                *end(s.relation.target),
                s.relation.kind.value,
                reason(s),
                s.relation.source_system,
                s.relation.source_record_id,
                str(s.relation.grading),
                s.relation.valid_from.isoformat() if s.relation.valid_from else "",
                s.relation.valid_to.isoformat() if s.relation.valid_to else "",
                s.relation.region,
            )
            for s in graph.edges
        ),
    )
