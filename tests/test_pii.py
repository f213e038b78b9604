import pytest

from tunewright.data.pii import find_pii, pii_kinds, redact


@pytest.mark.parametrize(
    "text, kind, found",
    [
        ("write to jane.doe@example.com today", "email", "jane.doe@example.com"),
        ("card 4111 1111 1111 1111 on file", "payment_card", "4111 1111 1111 1111"),
        ("SSN 123-45-6789 please", "us_ssn", "123-45-6789"),
        ("IBAN GB82 WEST 1234 5698 7654 32 for refunds", "iban", "GB82 WEST 1234 5698 7654 32"),
        ("from 192.168.10.1 yesterday", "ip_address", "192.168.10.1"),
        ("v6 2001:db8:85a3::8a2e:370:7334 seen", "ip_address", "2001:db8:85a3::8a2e:370:7334"),
        ("call (404) 555-0142 now", "phone", "(404) 555-0142"),
        ("call +1 404-555-0142 now", "phone", "+1 404-555-0142"),
    ],
)
def test_detects(text, kind, found):
    matches = [m for m in find_pii(text) if m.kind == kind]
    assert [m.text for m in matches] == [found]


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 shipped",  # fails the Luhn check: not a card
        "SSN-like 000-12-3456 and 666-12-3456",  # never-issued SSN areas
        "version 1.2.3.4000 released",  # not an IPv4 address
        "IBAN GB00 WEST 1234 5698 7654 32",  # bad checksum
        "product PT-1042 costs $189",
        "we open at 10:30:00 sharp",  # a time, not an IPv6 address
    ],
)
def test_look_alikes_are_not_reported(text):
    assert find_pii(text) == []


def test_overlapping_kinds_report_once_and_redaction_keeps_the_sentence():
    text = "Email a@b.io, card 4111-1111-1111-1111, phone 404.555.0142."
    matches = find_pii(text)
    assert [m.kind for m in matches] == ["email", "payment_card", "phone"]
    assert redact(text, matches) == "Email [EMAIL], card [PAYMENT_CARD], phone [PHONE]."


def test_kinds_can_be_selected():
    text = "a@b.io 404-555-0142"
    assert [m.kind for m in find_pii(text, {"phone"})] == ["phone"]
    assert set(pii_kinds()) == {"email", "iban", "payment_card", "us_ssn", "ip_address", "phone"}
