"""Write-only units of work become one statement: how their INSERTs are combined."""

from toex_common.uow import combine_inserts

PARENT = "INSERT INTO parents (id, region) VALUES ($1, $2)"
REQUEST = "INSERT INTO requests (id) VALUES ($1) ON CONFLICT DO NOTHING"


def test_rows_and_statements_are_numbered_on_from_each_other() -> None:
    combined = combine_inserts([(PARENT, [("p1", "EMSOU"), ("p2", "ERSOU")]), (REQUEST, [("r1",)])])
    assert combined == (
        "WITH w0 AS (INSERT INTO parents (id, region) VALUES ($1, $2), ($3, $4)) "
        "INSERT INTO requests (id) VALUES ($5) ON CONFLICT DO NOTHING",
        ["p1", "EMSOU", "p2", "ERSOU", "r1"],
    )


def test_one_statement_stays_a_plain_insert() -> None:
    assert combine_inserts([(PARENT, [("p1", "EMSOU")])]) == (PARENT, ["p1", "EMSOU"])


def test_anything_but_plain_inserts_in_order_is_left_alone() -> None:
    assert (
        combine_inserts([(PARENT, [("p1", "EMSOU")]), ("UPDATE parents SET region = $1", [("x",)])]) is None
    )
    assert combine_inserts([("INSERT INTO parents (id, region) VALUES ($2, $1)", [("a", "b")])]) is None
    assert combine_inserts([]) is None


def test_too_many_parameters_for_one_statement() -> None:
    assert combine_inserts([(PARENT, [("p", "EMSOU")] * 15_001)]) is None
