"""`toex pnd`: parsing of record names and of the record content options."""

from __future__ import annotations

import click
import pytest
from toex.pnd.v1 import pole_pb2
from toex.type.v1 import security_pb2
from toex_cli.pnd import build_record, record_name


def test_record_names_in_every_accepted_form() -> None:
    full = "regions/EMSOU/intelligence/abc123"
    assert record_name(full) == full
    assert record_name("emsou/intelligence/abc123") == full
    assert record_name("EMSOU/abc123") == full
    with pytest.raises(click.BadParameter):
        record_name("NOWHERE/abc123")


def test_person_content_grading_and_links_become_a_record_and_a_mask() -> None:
    record, given = build_record(
        {
            "person": "Liam James Hargreaves",
            "dob": "1998-07",
            "postcode": "DE1 3LD",
            "grading": "2c",
            "handling": "C",
            "conditions": "handler's consent",
            "links": ["uses=EMSOU/abc123"],
        }
    )
    person = record.entity.person
    assert (
        list(person.names[0].given_names) == ["Liam", "James"] and person.names[0].family_name == "Hargreaves"
    )
    assert (person.date_of_birth.year, person.date_of_birth.month) == (1998, 7)
    assert record.grading.source_evaluation == pole_pb2.SOURCE_EVALUATION_2
    assert record.grading.intelligence_assessment == pole_pb2.INTELLIGENCE_ASSESSMENT_C
    assert record.grading.handling == security_pb2.HANDLING_CODE_C
    assert record.links[0].target == "regions/EMSOU/intelligence/abc123"
    assert record.links[0].type == pole_pb2.LINK_TYPE_USES
    assert given == ["entity", "grading", "links"]


def test_two_kinds_at_once_are_refused() -> None:
    with pytest.raises(click.UsageError):
        build_record({"phone": "07700900123", "vrm": "AB12CDE"})
