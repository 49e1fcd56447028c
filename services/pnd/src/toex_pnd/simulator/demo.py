"""Records other forces hold on the simulated PND, so that searches find something."""

from __future__ import annotations

from typing import Any

GRADED_P = {
    "source_evaluation": "1",
    "intelligence_assessment": "B",
    "handling": "P",
    "handling_conditions": "",
}
GRADED_C = {
    "source_evaluation": "2",
    "intelligence_assessment": "C",
    "handling": "C",
    "handling_conditions": "Not to be disseminated outside law enforcement without the originator's consent",
}


def _line(
    ref: str,
    organisation: str,
    kind: str,
    entity: dict[str, Any],
    links: list[dict[str, str]] | None = None,
    grading: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "source_ref": ref,
        "organisation": organisation,
        "record_version": 1,
        "kind": kind,
        "grading": grading or GRADED_P,
        "entity": entity,
        "links": links or [],
    }


def demo_records() -> list[dict[str, Any]]:
    return [
        _line(
            "force/WMP/P1001",
            "WMP",
            "PERSON",
            {
                "person": {
                    "names": [
                        {"given_names": ["Daniel", "James"], "family_name": "Carter"},
                        {"given_names": ["DJ"], "family_name": "Carter", "alias": True},
                    ],
                    "date_of_birth": {"year": 1996, "month": 3, "day": 14},
                    "addresses": [
                        {"lines": ["14 Mill Lane"], "town": "Walsall", "postcode": "WS1 2AB", "country": "GB"}
                    ],
                    "gender": "male",
                }
            },
            [
                {"target": "force/WMP/T2001", "type": "USES", "description": "used March 2026"},
                {"target": "force/WMP/V3001", "type": "OWNS", "description": ""},
            ],
        ),
        _line("force/WMP/T2001", "WMP", "PHONE", {"phone": {"e164": "+447700900123", "line_type": "mobile"}}),
        _line(
            "force/WMP/V3001",
            "WMP",
            "VEHICLE",
            {"vehicle": {"vrm": "AB12CDE", "make": "Ford", "model": "Focus", "colour": "silver"}},
        ),
        _line(
            "force/DERBY/P1002",
            "DERBYSHIRE",
            "PERSON",
            {
                "person": {
                    "names": [{"given_names": ["Kelly"], "family_name": "Carter"}],
                    "date_of_birth": {"year": 1999},
                    "addresses": [
                        {"lines": ["2 Station Road"], "town": "Derby", "postcode": "DE1 2AB", "country": "GB"}
                    ],
                }
            },
            [{"target": "force/WMP/P1001", "type": "ASSOCIATE_OF", "description": "partner"}],
            GRADED_C,
        ),
        _line("force/MET/T2002", "MET", "PHONE", {"phone": {"e164": "+447700900456", "line_type": "mobile"}}),
        _line(
            "force/MET/A4001",
            "MET",
            "ONLINE_ACCOUNT",
            {"online_account": {"platform": "adultwork", "handle": "sweet_lily_99", "url": ""}},
            [{"target": "force/MET/T2002", "type": "USES", "description": "number in advert"}],
        ),
    ]
