"""The platform's NATS client parses headers exactly as nats-py does, faster."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from toex_common.events.nats import parse_header_lines

ENVELOPE = (
    b"Nats-Msg-Id: 3f2a1b4c-1111-2222-3333-444455556666\r\nce-specversion: 1.0\r\n"
    b"ce-type: toex.tasking.events.v2.JobCreated\r\nce-time: 2026-12-05T14:00:00.123456Z\r\n"
    b"toex-region: EMSOU\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"
)

ODD = [
    ENVELOPE,
    b"",
    b"\r\n",
    b"no colon here\r\nname:value\r\n",
    b"Name:\tTabbed \r\n  Spaced  :  both  \r\n",
    b"bad name: dropped\r\nbad\tname: dropped\r\nok: kept\r\n",
    b"caf\xc3\xa9: non-ascii name\r\nvalue: caf\xc3\xa9 \xff broken\r\n",
    b"x: a\rb\nc\r\n: empty name\r\nrepeat: 1\r\nrepeat: 2\r\n",
    b"ctrl\x00name: kept by both\r\nsep\x1fname: dropped by both\r\nv: \x1f\x85 edge \xc2\xa0\r\n",
    b"\xe2\x82: truncated\r\nv: \xe2\x82\r\n",
]


def test_the_envelope_headers_parse_as_nats_py_parses_them() -> None:
    for raw in ODD:
        assert parse_header_lines(raw) == Client._parse_header_lines(raw), raw


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.binary(max_size=12) | st.sampled_from([b"ce-id", b" a b ", b"\t", b"\xc3\xa9", b"\x1c"]),
            st.sampled_from([b":", b": ", b":\t", b""]),
            st.binary(max_size=16) | st.sampled_from([b"\xe2\x82", b" v \x0b", b"\xc2\x85x\xc2\xa0"]),
        ),
        max_size=6,
    )
)
def test_any_header_block_parses_as_nats_py_parses_it(lines: list[tuple[bytes, bytes, bytes]]) -> None:
    raw = b"\r\n".join(name + sep + value for name, sep, value in lines) + b"\r\n\r\n"
    assert parse_header_lines(raw) == Client._parse_header_lines(raw)
