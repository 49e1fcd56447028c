"""The console's templates read a view's keys before anything else, and its times are written in
UTC to the minute, unset ones as nothing."""

from types import SimpleNamespace

import jinja2
from google.protobuf.timestamp_pb2 import Timestamp
from toex.entity.v1 import entity_pb2 as pb
from toex_console.app import _Environment
from toex_console.formats import minute, when


def _render(source: str, **context: object) -> str:
    env = _Environment(loader=jinja2.DictLoader({"t.html": source}), autoescape=True)
    return env.get_template("t.html").render(**context)


def test_a_views_keys_are_read_escaped_and_a_missing_one_is_nothing() -> None:
    view = {"name": "<Ann>", "count": 3}
    assert _render("{{ v.name }} {{ v.count }} [{{ v.absent }}]", v=view) == "&lt;Ann&gt; 3 []"


def test_a_key_named_like_a_dict_method_is_the_key() -> None:
    # Jinja's own lookup would give the dict's method here.
    assert _render("{{ v.items }}", v={"items": "two items"}) == "two items"


def test_objects_are_read_as_jinja_reads_them() -> None:
    loop_text = _render(
        "{% for x in xs %}{{ loop.index }}{{ x.label }}{% endfor %}", xs=[SimpleNamespace(label="a")]
    )
    assert loop_text == "1a"


def test_times_are_utc_to_the_minute() -> None:
    assert minute(Timestamp(seconds=1_764_888_000)) == "2025-12-04 22:40"
    assert minute(Timestamp(seconds=-100)) == "1969-12-31 23:58"
    entity = pb.Entity()
    assert when(entity, "create_time") == ""
    entity.create_time.FromSeconds(1_764_888_059)
    assert when(entity, "create_time") == "2025-12-04 22:40"
