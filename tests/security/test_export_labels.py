"""Finding 12: a `$` in an attribution label broke PNG and SVG exports.

Attribution labels are typed by users (and come from other systems); matplotlib reads text
between dollar signs as mathematical notation, so an unbalanced `$` failed the whole export
and a balanced pair rendered something the user never wrote. Labels render literally."""

from __future__ import annotations

from datetime import UTC, datetime

from toex_comms.adapters import exports
from toex_comms.domain import analysis

WHEN = datetime(2024, 3, 4, 9, tzinfo=UTC)


def test_dollar_signs_in_labels_render_as_written() -> None:
    net = analysis.Network(
        [1, 2],
        {1: 3, 2: 1, 100: 4},
        [analysis.Edge(1, 100, 3, 0, 60, 3, WHEN, WHEN), analysis.Edge(2, 100, 1, 0, 60, 1, WHEN, WHEN)],
    )
    for label in ("pays $$ to $_$", r"alias $\foo$", "owes $100 to $BIG"):
        labels = {1: label, 2: "$^$"}
        assert exports.picture(net, "png", labels).startswith(b"\x89PNG")
        svg = exports.picture(net, "svg", labels).decode()
        assert label in svg
