"""JSON and JSONB columns are read with orjson where it reads exactly what the standard library
would, and with the standard library where orjson would not (toex_common.db.json_loads)."""

import json

import pytest
from toex_common.db import json_loads


@pytest.mark.parametrize(
    "text",
    [
        '{"method": "deterministic", "weights": [1.5, -0.25, 3], "note": null, "ok": true}',
        '{"name": "Zo\\u00eb \\ud83d\\ude00", "raw": "\u00e9"}',
        "[18446744073709551615, -9223372036854775808, 1e10, 0.1]",
        # An integer beyond 64 bits: orjson would give a float; the standard library keeps it.
        '{"reference": 123456789012345678901234567890}',
        '{"digits in a string": "12345678901234567890123"}',
    ],
)
def test_reads_what_the_standard_library_reads(text: str) -> None:
    expected = json.loads(text)
    got = json_loads(text)
    assert got == expected
    assert json.dumps(got) == json.dumps(expected)  # the same types, not just equal values


def test_a_long_integer_keeps_every_digit() -> None:
    assert json_loads("[123456789012345678901234567890]") == [123456789012345678901234567890]


def test_bad_json_is_refused_as_the_standard_library_refuses_it() -> None:
    with pytest.raises(json.JSONDecodeError):
        json_loads('{"a": ')
