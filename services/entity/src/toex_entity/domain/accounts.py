"""Bank accounts: UK sort code and account number checked by the published modulus checks
(Vocalink's "Validating account numbers" specification), IBANs by `schwifty`, and one normal
form for both so that a UK IBAN and the sort code and number it carries are one account.

The weight table (`valacdos.txt`) is Vocalink's, published for banks' and builders' use and
updated a few times a year; the caller passes the installation's copy (`parse_weight_table`)
rather than the package shipping one that goes stale (no setting loads it yet). Without a
table, or for a sort code the table does not list, the specification says no check is
possible: the account is taken as valid and the result says it was not checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from schwifty import IBAN
from schwifty.exceptions import SchwiftyException
from toex_kernel.errors import InvalidArgument

Method = Literal["MOD10", "MOD11", "DBLAL"]
_METHODS = ("MOD10", "MOD11", "DBLAL")
# Exceptions this implementation applies; a row with any other leaves its account unchecked.
SUPPORTED_EXCEPTIONS = frozenset({0, 1, 4, 6, 7})


@dataclass(frozen=True)
class WeightRow:
    """One row of the weight table: a sort code range, a method, 14 weights, an exception."""

    start: str
    end: str
    method: Method
    weights: tuple[int, ...]
    exception: int = 0


@dataclass(frozen=True)
class ModulusResult:
    valid: bool
    checked: bool
    reason: str


@dataclass(frozen=True)
class BankAccount:
    """A bank account in normal form: UK accounts by sort code and number, others by IBAN."""

    sort_code: str = ""
    account_number: str = ""
    iban: str = ""

    @property
    def key(self) -> str:
        """The identifier two records of one account share (`bank:GB:202015:55555555`)."""
        if self.sort_code:
            return f"bank:GB:{self.sort_code}:{self.account_number}"
        return f"bank:IBAN:{self.iban}"


def parse_weight_table(text: str) -> tuple[WeightRow, ...]:
    """Rows of `valacdos.txt`: `start end method w1..w14 [exception]`, blanks ignored."""
    rows: list[WeightRow] = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (17, 18) or parts[2] not in _METHODS:
            raise ValueError(f"weight table line {number}: not `start end method 14 weights [ex]`")
        method: Method = parts[2]  # type: ignore[assignment]
        rows.append(
            WeightRow(
                start=parts[0],
                end=parts[1],
                method=method,
                weights=tuple(int(w) for w in parts[3:17]),
                exception=int(parts[17]) if len(parts) == 18 else 0,
            )
        )
    return tuple(rows)


_NON_DIGIT = re.compile(r"[\s-]")


def normal_sort_code(text: str) -> str:
    digits = _NON_DIGIT.sub("", text or "")
    if not re.fullmatch(r"\d{6}", digits):
        raise InvalidArgument.field("sort_code", "a sort code is six digits (20-20-15)")
    return digits


def normal_account_number(text: str) -> str:
    """Eight digits; six- and seven-digit numbers are padded with leading zeros as the
    specification says."""
    digits = _NON_DIGIT.sub("", text or "")
    if not re.fullmatch(r"\d{6,8}", digits):
        raise InvalidArgument.field("account_number", "an account number is 6 to 8 digits")
    return digits.rjust(8, "0")


def _total(digits: list[int], weights: tuple[int, ...], method: Method) -> int:
    if method == "DBLAL":
        return sum(sum(divmod(d * w, 10)) for d, w in zip(digits, weights, strict=True))
    return sum(d * w for d, w in zip(digits, weights, strict=True))


def _passes(digits: list[int], row: WeightRow) -> bool:
    weights = row.weights
    if row.exception == 7 and digits[12] == 9:
        weights = (0,) * 8 + weights[8:]
    total = _total(digits, weights, row.method)
    if row.exception == 1:
        total += 27
    if row.method == "MOD11":
        if row.exception == 4:
            return total % 11 == digits[12] * 10 + digits[13]
        return total % 11 == 0
    return total % 10 == 0


def modulus_check(sort_code: str, account_number: str, table: tuple[WeightRow, ...]) -> ModulusResult:
    """The specification's check of a UK account: the rows of the sort code's range in table
    order, each of which must pass."""
    rows = [r for r in table if r.start <= sort_code <= r.end]
    if not rows:
        return ModulusResult(True, False, f"sort code {sort_code} is not in the weight table")
    unsupported = sorted({r.exception for r in rows} - SUPPORTED_EXCEPTIONS)
    if unsupported:
        return ModulusResult(True, False, f"exception {unsupported[0]} is not checked here")
    digits = [int(c) for c in sort_code + account_number]
    if any(r.exception == 6 for r in rows) and 4 <= digits[6] <= 8 and digits[12] == digits[13]:
        return ModulusResult(True, False, "a foreign currency account: no check is possible")
    for row in rows[:2]:
        if not _passes(digits, row):
            return ModulusResult(False, True, f"fails the {row.method} check for {sort_code}")
    return ModulusResult(True, True, "passes the modulus check")


def uk_account(sort_code: str, account_number: str, table: tuple[WeightRow, ...] = ()) -> BankAccount:
    """A UK account in normal form, refused when the modulus check says it cannot exist."""
    code = normal_sort_code(sort_code)
    number = normal_account_number(account_number)
    result = modulus_check(code, number, table)
    if not result.valid:
        raise InvalidArgument.field(
            "account_number", f"not a valid account for sort code {code}: {result.reason}"
        )
    return BankAccount(sort_code=code, account_number=number)


def iban_account(text: str, table: tuple[WeightRow, ...] = ()) -> BankAccount:
    """An IBAN (country format and check digits by schwifty); a GB IBAN is the UK account it
    carries, so that it and its sort code and number are one account."""
    try:
        iban = IBAN(text)
    except SchwiftyException as exc:
        raise InvalidArgument.field("iban", f"not a valid IBAN: {exc}") from None
    if iban.country_code == "GB":
        return uk_account(iban.branch_code, iban.account_code, table)
    return BankAccount(iban=iban.compact)
