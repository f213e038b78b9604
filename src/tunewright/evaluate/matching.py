"""Whether a model's answer contains an accepted phrase: the one rule behind the customer questions
(``questions.py``), the retention probes (``forgetting.py``) and the retrieval benchmark.

An answer matches when any accepted phrase occurs in it as whole, contiguous tokens, each word
allowed a plural "s" ("2 year" matches "2 years", "kayak" matches "no kayaks"; "7" never matches
"17"). Answer and phrase go through the same :func:`tokens`, so every rule of it holds both ways.

Not the SQuAD normaliser of ``metrics.py`` (which the ``contains`` metric keeps): it turns
punctuation into spaces, so "10%" becomes "10" and matches "10 days", "$6.95" becomes "6 95" (and
"1" is then found in "1.4"), an e-mail address falls apart into words that match anywhere
("peachtree"), and only the straight apostrophe is punctuation to it, so "don't" and "don’t" come
out different.
"""

from __future__ import annotations

import re
from typing import Sequence

__all__ = ["ARTICLES", "answer_matches", "tokens"]

_APOSTROPHE_IN_WORD = re.compile(r"(?<=[^\W\d_])['\u2019\u02bc](?=[^\W\d_])")
# "(?!\d)" rather than "\b": "1,000th" loses its separator too.
_THOUSANDS_SEPARATOR = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TOKEN = re.compile(r"""
      [\w.+-]+@[\w-]+(?:\.[\w-]+)+   # an e-mail address stays one token
    | \d+(?:\.\d+)?                  # a number keeps its decimals: "1.4" is neither "1" nor "4"
    | [^\W\d_]+                      # a run of letters
    | [%$\u20ac\u00a3\u00a5]         # signs that change what a number means
""", re.VERBOSE)

# A negation is spelled out, so "doesn't sell" contains the accepted "not sell" and "don't" is
# "do not" ("can't" is "can not": "cannot" is spelled apart too, so all three agree).
_NEGATION = re.compile(r"\b(?:(can)['\u2019\u02bc]t|(won)['\u2019\u02bc]t|([^\W\d_]+)n['\u2019\u02bc]t|(can)(not))\b")
_IRREGULAR = {"won": "will"}

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_SMALL = {word: n for n, word in enumerate(_ONES)}
_TENS = {word: 10 * n
         for n, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}

# Articles are words like any other here (the retention check used to drop them on both sides):
# whoever wrote a phrase may mean its article, since "the 21" is a day of the month where a bare
# "21" is also "$21", and "vitamin a" without its "a" would be found in "vitamin c". Only a phrase
# of nothing but articles is refused, by the probe loader, since it is found in nearly every answer.
ARTICLES = frozenset({"a", "an", "the"})


def tokens(text: str) -> list[str]:
    """Lower-case tokens of an answer or an accepted phrase (both sides go through this).

    - numbers keep their decimal point ("1.4 kg" -> "1.4", "kg"; a sentence's final period is not
      part of them), lose thousands separators and trailing decimal zeros ("$1,299.00" -> "$",
      "1299"; "1.40" -> "1.4"); digits and letters split ("88g" -> "88", "g"), as do hyphens
      ("PT-2210" -> "pt", "2210"; "2-year" -> "2", "year");
    - whole numbers below 1000 written in words become digits ("seven" -> "7", "twenty-one" ->
      "21", "one hundred and five" -> "105"), so "7" = "seven" and "2 year" = "two-year";
    - "%" is its own token, spelled "percent" ("10%" = "10 percent" = "10 %", never "10 days");
      "$", "€", "£", "¥" are their own tokens, so "$6.95" contains "6.95";
    - a negation is spelled out ("don't" = "don’t" = "do not", "doesn't sell" contains "not sell",
      "can't" = "cannot" = "can not", "won't" = "will not"); any other apostrophe inside a word,
      straight or curly, is dropped ("Peachtree's" -> "peachtrees", which the plural rule then lets
      match "peachtree");
    - an e-mail address is one token: "help@peachtree-outfitters.example" matches only itself.
    """
    text = _NEGATION.sub(_spell_out, text.casefold())
    text = _THOUSANDS_SEPARATOR.sub("", _APOSTROPHE_IN_WORD.sub("", text))
    return _numbers_in_digits([_canonical(t) for t in _TOKEN.findall(text)])


def _spell_out(match: re.Match) -> str:
    stem = next(g for g in match.groups()[:4] if g)
    return f"{_IRREGULAR.get(stem, stem)} not"


def _canonical(token: str) -> str:
    if token == "%":
        return "percent"
    if token[0].isdigit() and "." in token:
        return token.rstrip("0").rstrip(".")  # "349.00" is "349", "1.40" is "1.4"
    return token


def _below_hundred(words: Sequence[str], i: int) -> tuple[int, int] | None:
    """(value, tokens read) of a number below 100 in words starting at ``words[i]``."""
    word = words[i] if i < len(words) else None
    if word in _SMALL:
        return _SMALL[word], 1
    if word in _TENS:
        unit = _SMALL.get(words[i + 1], 0) if i + 1 < len(words) else 0
        return (_TENS[word] + unit, 2) if 0 < unit < 10 else (_TENS[word], 1)
    return None


def _number_at(words: Sequence[str], i: int) -> tuple[int, int] | None:
    """(value, tokens read) of a whole number below 1000 in words starting at ``words[i]``."""
    head = _below_hundred(words, i)
    if head is None:
        return None
    value, used = head
    if not (0 < value < 10 and i + used < len(words) and words[i + used] == "hundred"):
        return head
    value, used = value * 100, used + 1
    after_and = i + used < len(words) and words[i + used] == "and"
    rest = _below_hundred(words, i + used + after_and)
    # "between one hundred and two hundred" is two numbers, not 102 and a stray "hundred".
    if rest and rest[0] and not (i + used + after_and + rest[1] < len(words)
                                 and words[i + used + after_and + rest[1]] == "hundred"):
        value, used = value + rest[0], used + after_and + rest[1]
    return value, used


def _numbers_in_digits(words: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(words):
        number = _number_at(words, i)
        if number is None:
            out.append(words[i])
            i += 1
        else:
            out.append(str(number[0]))
            i += number[1]
    return out


# After these an "s" is a verb's, not a plural's: "a person who cooks" does not answer "cook", while
# "we have two cooks" does (the retention probes had no plural rule, and their shipped "cook" would
# otherwise be found in the question "what do you call a person who cooks"). Only words that never
# stand before a plural noun are listed: "which kayaks" and "that cooks" keep their plural.
_VERB_SUBJECTS = frozenset({"he", "she", "it", "who"})


def _word_matches(said: Sequence[str], at: int, wanted: str) -> bool:
    word = said[at]
    if word == wanted:
        return True
    return (wanted.isalpha() and word == wanted + "s"
            and not (at > 0 and said[at - 1] in _VERB_SUBJECTS))


def answer_matches(answer: str, accept: Sequence[str]) -> bool:
    """Any accepted phrase occurs in the answer as whole, contiguous tokens, each word allowed a plural
    "s" ("2 year" matches "2 years", "kayak" matches "no kayaks"; "7" never matches "17")."""
    said = tokens(answer)
    for phrase in accept:
        wanted = tokens(phrase)
        if wanted and any(all(_word_matches(said, i + k, w) for k, w in enumerate(wanted))
                          for i in range(len(said) - len(wanted) + 1)):
            return True
    return False
