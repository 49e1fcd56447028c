import pytest
from toex_common import pagination
from toex_common.testing.fakes import principal
from toex_kernel import names
from toex_kernel.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from toex_kernel.policy import MethodPolicy, MethodRule
from toex_kernel.principal import Role
from toex_kernel.regions import Region

POLICY = MethodPolicy(
    {
        "/t.S/Read": MethodRule.read(Role.RESEARCHER),
        "/t.S/Write": MethodRule.write(Role.SUPERVISOR),
    }
)


def test_role_outside_rule_is_denied() -> None:
    with pytest.raises(PermissionDenied, match="supervisor"):
        POLICY.check(principal("researcher.emsou", Role.RESEARCHER), "/t.S/Write", "")


def test_method_without_rule_is_denied() -> None:
    with pytest.raises(PermissionDenied):
        POLICY.check(principal("admin.emsou", Role.ADMIN), "/t.S/Other", "Op X")


def test_read_without_purpose_is_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        POLICY.check(principal("researcher.emsou", Role.RESEARCHER), "/t.S/Read", "")
    assert caught.value.violation.subject == "x-toex-purpose"
    POLICY.check(principal("researcher.emsou", Role.RESEARCHER), "/t.S/Read", "Op X")


def test_write_needs_no_purpose() -> None:
    POLICY.check(principal("supervisor.ersou", Role.SUPERVISOR), "/t.S/Write", "")


def test_names_parse_and_reject() -> None:
    assert names.parse("regions/EMSOU/jobs/ab12", "regions/{region}/jobs/{job}", "name") == {
        "region": "EMSOU",
        "job": "ab12",
    }
    with pytest.raises(InvalidArgument) as caught:
        names.parse("regions/EMSOU/things/ab12", "regions/{region}/jobs/{job}", "name")
    assert caught.value.violations[0].field == "name"
    with pytest.raises(InvalidArgument):
        names.parse_region("ATLANTIS", "parent")
    assert names.parse_region("emsou", "parent") is Region.EMSOU
    assert names.parse_region("-", "parent", allow_all=True) is None


def test_page_token_round_trip_and_query_binding() -> None:
    token = pagination.encode("2026-01-01T00:00:00+00:00", "abc", "q1")
    assert pagination.decode(token, "q1") == ("2026-01-01T00:00:00+00:00", "abc")
    with pytest.raises(InvalidArgument, match="different query"):
        pagination.decode(token, "q2")
    with pytest.raises(InvalidArgument):
        pagination.decode("!!notatoken", "q1")
    assert pagination.page_size(0) == 50
    assert pagination.page_size(10_000) == 500
