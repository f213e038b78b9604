"""Personal data in generated rows: find it, then flag or redact it, as the recipe says.

Patterns find candidates; validators (Luhn for payment cards, the mod-97 check for IBANs, the
SSA's rules for US SSNs, octet ranges for IPv4) drop look-alikes, so an order number is not
reported as a card and a version string is not reported as an IP address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable

Validator = Callable[[str], bool]


@dataclass(frozen=True)
class PiiMatch:
    kind: str
    start: int
    end: int
    text: str


def _luhn(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _iban(candidate: str) -> bool:
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _ssn(candidate: str) -> bool:
    area, group, serial = candidate.split("-")
    return area not in {"000", "666"} and not area.startswith("9") and group != "00" and serial != "0000"


def _ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


# kind -> (pattern, validator); order matters where patterns overlap (a card before a phone).
_DETECTORS: dict[str, tuple[re.Pattern[str], Validator | None]] = {
    "email": (re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"), None),
    "iban": (re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), _iban),
    "payment_card": (re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), _luhn),
    "us_ssn": (re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), _ssn),
    "ip_address": (
        re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{1,4}(?![\w:])"),
        _ip,
    ),
    "phone": (re.compile(r"(?<![\w-])(?:\+?\d{1,3}[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]?\d{4}(?![\w-])"), None),
}


def find_pii(text: str, kinds: set[str] | None = None) -> list[PiiMatch]:
    """Non-overlapping matches, earliest first; where two kinds overlap the first detector wins."""
    found: list[PiiMatch] = []
    taken: list[tuple[int, int]] = []
    for kind, (pattern, validate) in _DETECTORS.items():
        if kinds is not None and kind not in kinds:
            continue
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < t_end and t_start < end for t_start, t_end in taken):
                continue
            if validate is not None and not validate(match.group()):
                continue
            taken.append((start, end))
            found.append(PiiMatch(kind, start, end, match.group()))
    return sorted(found, key=lambda m: m.start)


def redact(text: str, matches: list[PiiMatch]) -> str:
    """Replace each match with a typed placeholder such as [EMAIL], keeping the sentence readable."""
    out, cursor = [], 0
    for match in sorted(matches, key=lambda m: m.start):
        out.append(text[cursor : match.start])
        out.append(f"[{match.kind.upper()}]")
        cursor = match.end
    out.append(text[cursor:])
    return "".join(out)


def pii_kinds() -> list[str]:
    return list(_DETECTORS)
