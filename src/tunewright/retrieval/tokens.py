"""BM25 tokens that keep product codes, phone numbers and sizes findable however they are typed.

Lower case, split on anything that is not a letter or a digit, and between letters and digits:
"PT 7716" gives "pt" and "7716". A word that mixes letters and digits, alone or joined by hyphens
or underscores ("PT-7716", "pt7716", "40L"), is an identifier: it is indexed whole, joined
("pt7716"), and by its numbers ("7716"), but not by its letters: "pt" begins every product code, so
it would put every catalog row into the BM25 ranking and let the embeddings' arbitrary order of
those rows outvote the exact match in the fusion. So "PT-7716", "pt-7716", "pt7716" (the joined
form) and "PT 7716" (the number) each match the one row whose code is PT-7716. Other hyphenated
words are indexed by their parts and joined ("404-555-0142" -> "404", "555", "0142",
"4045550142"); a decimal is also kept whole ("2.1 kg" -> "2", "1", "2.1", "kg").

Stopwords are bm25s's own English list (33 words, none of them a code, number or single letter)
plus the words every customer question has and no source is about: pronouns, auxiliaries and
question words ("Can I call you on a Sunday?" matched the two return policies that say "can be
returned" by "can" alone, and kept the contact hours out of the top 2). Measured as "an accepted
answer among the top 2 chunks": peachtree 31 -> 33 of 36, its 40 later questions 30 -> 30; lakeline
at its k=3 30 of 36 instead of 31 (the one lost, "What's your cheapest fiber plan?", had matched a
row by chance; its group summary answers it).
A word of letters only loses a plural ending ("days" -> "day", "accessories" -> "accessory"), the
same on both sides, so "returns" finds "return". With ``stem`` (the recipe's ``retrieval.stem``)
it is reduced to its Snowball (Porter 2) stem instead, with PyStemmer, the stemmer bm25s supports:
customers write "cancel" where a policy says "Cancelling" or "cancellation". Measured as "an
accepted answer among the top 3 chunks": lakeline 27 -> 30 of 33 with stems, peachtree unchanged
at 33 of 35; but the demo's two training runs with stems scored 83.3% and 80.6% on its customer
questions against 88.9% without, so stems are a recipe's choice, off by default. Codes and numbers
are never stemmed.
"""

from __future__ import annotations

import re

import Stemmer
from bm25s.stopwords import STOPWORDS_EN

TOKENIZER_VERSION = 3  # recorded in the manifest; bump when the rules below change
QUESTION_WORDS = frozenset(
    "i me my mine myself you your yours yourself we us our ours he him his she her hers its them "
    "am been being do does did have has had can could would should shall might must "
    "what which who whom whose when where why how hi hello hey please thanks thank just also any anything".split())
STOPWORDS = frozenset(STOPWORDS_EN) | QUESTION_WORDS

_WORD = re.compile(r"[^\W_]+(?:[-_][^\W_]+)*")  # letters and digits, joined by - or _: pt-7716, price_usd
_PIECE = re.compile(r"\d+|[^\W\d_]+")  # split between letters and digits
_DECIMAL = re.compile(r"\d+\.\d+")


_STEMMER = Stemmer.Stemmer("english")


def _fold(token: str, stem: bool) -> str:
    if not token.isalpha():
        return token
    if stem:
        return _STEMMER.stemWord(token)
    if len(token) <= 3:
        return token
    if token.endswith("ies") and len(token) > 4:
        return token[:-3] + "y"
    if token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def _is_identifier(pieces: list[str]) -> bool:
    """A word mixing letters and digits ("PT-7716", "pt7716", "40L")."""
    return any(p[0].isdigit() for p in pieces) and any(not p[0].isdigit() for p in pieces)


def identifiers(text: str) -> set[str]:
    """The identifiers in a text, each in its joined, lower-case form, so "PT-7716" and "pt-7716"
    give the same "pt7716"."""
    pieces = (_PIECE.findall(word) for word in _WORD.findall(text.casefold()))
    return {"".join(p) for p in pieces if _is_identifier(p)}


def tokenize(text: str, *, stem: bool = False) -> list[str]:
    """The bag of BM25 terms of a chunk or a query (order is not meaningful)."""
    text = text.casefold()
    out: list[str] = []
    for word in _WORD.findall(text):
        pieces = _PIECE.findall(word)
        joined = "".join(pieces)
        if _is_identifier(pieces):
            out.append(joined)  # an identifier: whole and by its numbers
            out.extend(p for p in pieces if p[0].isdigit())
            continue
        out.extend(pieces)
        if len(pieces) > 1:
            out.append(joined)
    out.extend(_DECIMAL.findall(text))
    return [_fold(t, stem) for t in out if t not in STOPWORDS]
