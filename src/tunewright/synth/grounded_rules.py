"""Rules a policy states with a threshold, asked with the customer's own number.

"Footwear can be returned within 60 days" answers "can I return them?" only after comparing the
customer's "50 days ago" with 60. A seed pair teaches the sentence; a rule teaches the comparison:
one fact per value, answered by the side of the limit the value falls on. The checks here refuse,
naming the field, a rule that could not teach that: a quote the document does not hold, a question
without ``{n}``, a value on the limit itself (which side it falls on is what the policy's wording
decides, and a rule has none), values all on one side, and a reference the other side's answer also
contains (held-out scoring could not tell a wrong side from a right one).
"""

from __future__ import annotations

from ..config import RuleSide, RuleSpec
from ..errors import TunewrightError
from .patterns import placeholders


def _shown(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def rule_cases(rule: RuleSpec) -> list[tuple[str, RuleSide]]:
    """(the value as the customer writes it, the side of the limit that answers it), in recipe order."""
    values = rule.values.items() if isinstance(rule.values, dict) else [(_shown(v), v) for v in rule.values]
    return [(text, rule.at_most if number <= rule.limit else rule.over) for text, number in values]


def check_rule(rule: RuleSpec, field: str, document_text: str, document_name: str) -> None:
    """``document_text``: the document lower-cased with whitespace folded, as seeds are checked."""
    from ..evaluate.metrics import Contains

    if " ".join(rule.quote.lower().split()) not in document_text:
        raise TunewrightError(f"quote '{rule.quote}' does not appear in {document_name}", field=f"{field}.quote")
    for pattern in rule.questions:
        if "n" not in placeholders(pattern):
            raise TunewrightError(f"question '{pattern}' does not name {{n}}, the customer's number the rule is "
                                  "applied to", field=f"{field}.questions")
    patterns = [("questions", p) for p in rule.questions]
    patterns += [(name, p) for name, side in (("at_most", rule.at_most), ("over", rule.over))
                 for p in (side.answer, side.reference or "")]
    for where, pattern in patterns:
        unknown = placeholders(pattern) - {"n"}
        if unknown:
            raise TunewrightError(f"pattern '{pattern}' names {', '.join(sorted(unknown))}; a rule's patterns "
                                  "see only {n}", field=f"{field}.{where}")
    numbers = rule.values.values() if isinstance(rule.values, dict) else rule.values
    if any(number == rule.limit for number in numbers):
        raise TunewrightError(f"a value equals the limit {_shown(rule.limit)}: which side it falls on is for the "
                              "policy's wording to say; use values clearly below or above", field=f"{field}.values")
    if len({number <= rule.limit for number in numbers}) < 2:
        raise TunewrightError(f"every value is on one side of the limit {_shown(rule.limit)}; a rule needs both",
                              field=f"{field}.values")
    for text, side in rule_cases(rule):
        other = rule.over if side is rule.at_most else rule.at_most
        reference = (side.reference or side.answer).format(n=text)
        if Contains().score(other.answer.format(n=text), reference):
            name = "at_most" if side is rule.at_most else "over"
            raise TunewrightError(f"reference '{reference}' is also found in the other side's answer for {text}, so "
                                  "held-out scoring could not tell the wrong side from the right one",
                                  field=f"{field}.{name}.reference")

