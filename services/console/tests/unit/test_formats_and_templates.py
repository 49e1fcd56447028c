"""The console's templates read a view's keys before anything else, its times are written in UTC
to the minute (unset ones as nothing), enum values as words, and a record's facts one a line."""

from types import SimpleNamespace

import jinja2
from google.protobuf.timestamp_pb2 import Timestamp
from toex.entity.v1 import entity_pb2 as pb
from toex.type.v1 import security_pb2
from toex_console.app import _Environment
from toex_console.entities import _involving, grading_code, record_view
from toex_console.formats import label, minute, when


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


def test_enum_values_are_words_and_an_unknown_one_its_number() -> None:
    assert label(pb.ChangeKind, pb.CHANGE_KIND_MERGED, "CHANGE_KIND_") == "merged"
    assert label(pb.RelationKind, pb.RELATION_KIND_USES_PHONE, "RELATION_KIND_") == "uses phone"
    # The same enum under another prefix is its own table.
    assert label(pb.ChangeKind, pb.CHANGE_KIND_MERGED, "CHANGE_") == "kind merged"
    # A value added to the contracts after this console was built.
    assert label(pb.ChangeKind, 999, "CHANGE_KIND_") == "999"


def test_gradings_read_as_people_write_them() -> None:
    assert grading_code(pb.Grading()) == "not graded"
    graded = pb.Grading(
        source_evaluation=pb.SOURCE_EVALUATION_3,
        intelligence_assessment=pb.INTELLIGENCE_ASSESSMENT_E,
        handling=security_pb2.HANDLING_CODE_P,
    )
    assert grading_code(graded) == "3EP"
    assert grading_code(pb.Grading(intelligence_assessment=pb.INTELLIGENCE_ASSESSMENT_A)) == "?AC"


def test_a_records_facts_are_escaped_one_a_line() -> None:
    record = pb.SourceRecord(
        name="regions/EMSOU/records/R1",
        person=pb.Person(given_name="<b>Ann</b>", surname="LEE", phone_numbers=["+447700900123"]),
    )
    view = record_view(record, 3)
    assert view["index"] == 3
    page = _render("<td>{{ r.content }}</td>", r=view)
    assert page == "<td>&lt;b&gt;Ann&lt;/b&gt; LEE<br>phone +447700900123</td>"


def test_a_history_entry_names_its_entities_then_its_records() -> None:
    def involving(entities: list[str], records: list[str]) -> str:
        return _involving(pb.EntityChange(entities=entities, records=records))

    assert involving(["entities/E9"], []) == "entities/E9"
    assert involving(["entities/E5", "entities/E6"], ["R1"]) == "entities/E5, entities/E6; 1 record"
    assert involving([], ["R1", "R2"]) == "2 records"
    assert involving([], []) == "0 records"
