"""Grounded question/answer rows from a table (one entity per row) and from seed pairs on prose.

Nothing here knows a domain: question and answer patterns come from the recipe. Each fact is
asked in several phrasings; some phrasings are held out for the eval split, so evaluation
measures whether the model learned the fact rather than one sentence.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..config import BuildSpec, DocumentSource, TableSource
from ..data.schema import ChatRow
from ..errors import TunewrightError
from .base import GeneratedRow, register_generator
from .grounded_groups import group_facts
from .grounded_rules import check_rule, rule_cases
from .patterns import placeholders

Resolve = Callable[[str], Path]


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise TunewrightError("source file not found", file=path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise TunewrightError(f"not valid UTF-8 (byte {exc.start})", file=path, line=line) from None


def _split_phrasings(
    phrasings: Sequence[str], spec: BuildSpec, key: str
) -> tuple[list[str], list[str]]:
    if len(phrasings) <= spec.eval_phrasings:
        raise TunewrightError(
            f"needs more than {spec.eval_phrasings} phrasings so that at least one is left for training", field=key
        )
    order = list(range(len(phrasings)))
    random.Random(f"{spec.seed}:{key}").shuffle(order)
    held = set(order[: spec.eval_phrasings])
    return [p for i, p in enumerate(phrasings) if i not in held], [phrasings[i] for i in sorted(held)]


def _check_patterns(patterns, allowed: set[str], field: str) -> None:
    for pattern in [*patterns.questions, patterns.answer, patterns.reference or ""]:
        missing = placeholders(pattern) - allowed
        if missing:
            raise TunewrightError(f"pattern '{pattern}' names unknown columns: {', '.join(sorted(missing))}", field=field)


def _rotate(items: Sequence[str], start: int, count: int | None) -> list[str]:
    """A window of ``count`` items starting at ``start``: different entities see different phrasings."""
    if count is None or count >= len(items):
        return list(items)
    return [items[(start + k) % len(items)] for k in range(count)]


def _short_forms(name: str) -> list[str]:
    """A name and the shorter ways customers write it: "the tent", "my rain shell" (the last word, and
    all but the first; lower case). On the demo, policy questions naming "the Basecamp tent" or "a rain
    shell" were answered about the product instead of the policy while the full name was all it trained."""
    words = name.split()
    if len(words) < 2:
        return [name]
    # Three ways, drawn alike; for a two-word name the short two are the same word.
    return [name, words[-1].lower(), " ".join(words[1:]).lower()]


def _qa(question: str, answer: str, reference: str, meta: dict) -> ChatRow:
    return ChatRow(
        messages=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        reference=reference,
        meta=meta,
    )


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def read_table(path: Path) -> tuple[set[str], list[tuple[int, dict[str, str]]]]:
    """The header and (source line, stripped cells) of each row; the header is line 1."""
    reader = csv.DictReader(_read_text(path).splitlines())
    header = set(reader.fieldnames or [])
    records = [(line_no, {k: (v or "").strip() for k, v in record.items()}) for line_no, record in enumerate(reader, start=2)]
    if not records:
        raise TunewrightError("table has no rows", file=path)
    return header, records


def _check_tells_apart(fact, field: str) -> None:
    """A compared pair's reference must not be found in the answer that names the wrong winner:
    with reference "{name}" and an answer naming both items, held-out scoring counted every
    comparison right (lakeline: 22 of 22 by that reference, 15 of 22 by who was named the winner)."""
    from ..evaluate.metrics import Contains

    patterns = fact.patterns
    reference = (patterns.reference or patterns.answer).format(**fact.values)
    wrong = patterns.answer.format(**fact.wrong_values)
    if wrong != patterns.answer.format(**fact.values) and Contains().score(wrong, reference):
        c_index = fact.questions_field.rsplit(".", 2)[-2]
        raise TunewrightError(
            f"reference '{reference}' is also found in the answer that names the other item the winner "
            f"('{wrong}'), so held-out scoring could not tell a wrong comparison from a right one; make the "
            "reference the claim, for example '{name} is lighter'", field=f"{field}.compare.{c_index}.reference")


@register_generator
class GroundedQA:
    name = "grounded-qa"

    def generate(self, spec: BuildSpec, resolve_path: Resolve) -> Iterable[GeneratedRow]:
        for t_index, table in enumerate(spec.tables):
            yield from self._table_rows(spec, table, t_index, resolve_path)
        mentions = self._mentions(spec, resolve_path)
        for d_index, document in enumerate(spec.documents):
            yield from self._document_rows(spec, document, d_index, resolve_path, mentions)
        if spec.absent is not None:
            yield from self._absent_rows(spec)

    def _wrap(self, spec: BuildSpec, question: str, index: int) -> str:
        # Customers type in lower case too; a lower-cased surface form teaches names case-insensitively.
        return spec.wrappers[index % len(spec.wrappers)].format(q=question, q_lower=question.lower())

    def _fact(self, spec: BuildSpec, key: str, split: tuple[list[str], list[str]], values: dict[str, str],
              answer: str, reference: str, meta: dict, start: int, sources: tuple[str, ...],
              cap: int | None = None) -> Iterable[GeneratedRow]:
        """One fact: its training phrasings (a rotating window of ``cap``, default ``train_phrasings``,
        wrapped) and one held-out phrasing."""
        train_q, eval_q = split
        if spec.holdout == "fact":
            # The seeded held-out pattern first, then the rest: row ``start`` holds out the pattern
            # at its turn, so over a table's rows every pattern is trained and held out.
            pool = [*eval_q, *train_q]
            held = {(start + j) % len(pool) for j in range(len(eval_q))}
            train_q = [p for i, p in enumerate(pool) if i not in held]
            eval_q = [pool[i] for i in sorted(held)]
        answer = answer.format(**values)
        reference = reference.format(**values)
        meta = {**meta, "fact": key}
        for k, question in enumerate(_rotate(train_q, start, cap if cap is not None else spec.train_phrasings)):
            q = self._wrap(spec, question.format(**values), start + k)
            yield GeneratedRow(_qa(q, answer, reference, {**meta, "phrasing": question}), "train", sources)
        question = eval_q[start % len(eval_q)]
        yield GeneratedRow(_qa(question.format(**values), answer, reference, {**meta, "phrasing": question}), "eval", sources)

    def _table_rows(
        self, spec: BuildSpec, table: TableSource, t_index: int, resolve: Resolve
    ) -> Iterable[GeneratedRow]:
        path = resolve(table.path)
        header, records = read_table(path)
        prefix = f"build.tables.{t_index}"
        for column, patterns in table.columns.items():
            field = f"{prefix}.columns.{column}"
            if column not in header:
                raise TunewrightError(f"column '{column}' is not in the table (has: {', '.join(sorted(header))})", file=path, field=field)
            _check_patterns(patterns, header, field)
        for r_index, patterns in enumerate(table.records):
            _check_patterns(patterns, header, f"{prefix}.records.{r_index}")
        for column, patterns in table.columns.items():
            split = _split_phrasings(patterns.questions, spec, f"{prefix}.columns.{column}.questions")
            for line_no, values in records:
                if not values.get(column):
                    continue  # an empty cell is no fact to teach
                meta = {"generator": self.name, "source": {"file": path.name, "line": line_no}}
                yield from self._fact(spec, f"{column}@{line_no}", split, values, patterns.answer,
                                      patterns.reference or "{" + column + "}", meta, line_no, (str(path),),
                                      cap=patterns.phrasings)
        for r_index, patterns in enumerate(table.records):
            split = _split_phrasings(patterns.questions, spec, f"{prefix}.records.{r_index}.questions")
            for line_no, values in records:
                meta = {"generator": self.name, "source": {"file": path.name, "line": line_no}}
                yield from self._fact(spec, f"record{r_index}@{line_no}", split, values, patterns.answer,
                                      patterns.reference or patterns.answer, meta, line_no, (str(path),),
                                      cap=patterns.phrasings)
        if table.groups is not None:
            yield from self._group_rows(spec, table.groups, records, header, f"{prefix}.groups", path)

    def _group_rows(self, spec: BuildSpec, groups, records, header: set[str], field: str, path: Path) -> Iterable[GeneratedRow]:
        named = {"group", "item", "names"}
        for name, patterns in [("members", groups.members), *[(f"lowest.{c}", q) for c, q in groups.lowest.items()],
                               *[(f"highest.{c}", q) for c, q in groups.highest.items()],
                               *[(f"overall_lowest.{c}", q) for c, q in groups.overall_lowest.items()],
                               *[(f"overall_highest.{c}", q) for c, q in groups.overall_highest.items()]]:
            if patterns is not None:
                _check_patterns(patterns, header | named, f"{field}.{name}")
        if groups.others is not None:
            _check_patterns(groups.others, header | named | {"others"}, f"{field}.others")
        for c_index, compare in enumerate(groups.compare):
            _check_patterns(compare, header | named | {"a", "b"} | {f"other_{h}" for h in header}, f"{field}.compare.{c_index}")
        splits: dict[str, tuple[list[str], list[str]]] = {}
        for number, fact in enumerate(group_facts(groups, records, header, field, path.name)):
            if fact.wrong_values is not None:
                _check_tells_apart(fact, field)
            if fact.questions_field not in splits:
                splits[fact.questions_field] = _split_phrasings(fact.patterns.questions, spec, fact.questions_field)
            # across_rows: the fact needs the whole group; the row named by ``line`` is only where its answer is.
            source = {"file": path.name, "line": fact.line, "across_rows": True}
            if fact.group is not None:
                source["group"] = fact.group  # what a group summary passage in the index states
            meta = {"generator": self.name, "source": source}
            patterns = fact.patterns
            yield from self._fact(spec, fact.key, splits[fact.questions_field], fact.values, patterns.answer,
                                  patterns.reference or patterns.answer, meta, number, (str(path),),
                                  cap=patterns.phrasings if patterns.phrasings is not None else spec.group_phrasings)

    def _absent_rows(self, spec: BuildSpec) -> Iterable[GeneratedRow]:
        absent = spec.absent
        _check_patterns(absent, {"item"}, "build.absent")
        split = _split_phrasings(absent.questions, spec, "build.absent.questions")
        meta = {"generator": self.name, "source": {"recipe": "build.absent"}}
        for i, item in enumerate(absent.items):
            yield from self._fact(spec, f"absent@{item}", split, {"item": item}, absent.answer,
                                  absent.reference or absent.answer, meta, i, (), cap=absent.phrasings)

    def _mentions(self, spec: BuildSpec, resolve: Resolve) -> list[str]:
        """The values of ``build.mentions.column`` (empty without ``build.mentions``)."""
        if spec.mentions is None:
            return []
        mention = spec.mentions
        if mention.table not in {t.path for t in spec.tables}:
            raise TunewrightError(f"'{mention.table}' is not one of build.tables", field="build.mentions.table")
        path = resolve(mention.table)
        header, records = read_table(path)
        if mention.column not in header:
            raise TunewrightError(f"column '{mention.column}' is not in the table (has: "
                                  f"{', '.join(sorted(header))})", file=path, field="build.mentions.column")
        return sorted({record[mention.column] for _, record in records} - {""})

    def _mentioned(self, spec: BuildSpec, train_q: Sequence[str], mentions: Sequence[str], field: str,
                   answer: str, reference: str, meta: dict, path: Path) -> Iterable[GeneratedRow]:
        """``per_seed`` extra training rows: a training phrasing wrapped with a drawn entity."""
        rng = random.Random(f"{spec.seed}:{field}:mentions")
        wrappers = spec.mentions.wrappers
        for k in range(spec.mentions.per_seed):
            question, name = rng.choice(list(train_q)), rng.choice(list(mentions))
            if spec.mentions.short_forms:
                name = rng.choice(_short_forms(name))
            wrapper = wrappers[rng.randrange(len(wrappers))]
            text = wrapper.format(q=question, q_lower=question.lower(), mention=name)
            yield GeneratedRow(_qa(text, answer, reference, {**meta, "phrasing": question, "mention": name}),
                               "train", (str(path),))

    def _document_rows(
        self, spec: BuildSpec, document: DocumentSource, d_index: int, resolve: Resolve, mentions: Sequence[str] = ()
    ) -> Iterable[GeneratedRow]:
        path = resolve(document.path)
        text = _normalise(_read_text(path))
        for s_index, seed in enumerate(document.seeds):
            field = f"build.documents.{d_index}.seeds.{s_index}"
            reference = seed.reference or seed.answer
            # A seed whose key fact is absent from its document is not grounded: refuse it rather
            # than teach the model something the source does not say.
            if _normalise(reference) not in text:
                raise TunewrightError(f"reference '{reference}' does not appear in {path.name}", field=f"{field}.reference")
            train_q, eval_q = _split_phrasings(seed.questions, spec, f"{field}.questions")
            meta = {"generator": self.name, "source": {"file": path.name}, "fact": f"seed@{d_index}.{s_index}"}
            cap = next((c for c in (seed.phrasings, spec.seed_phrasings) if c is not None), spec.train_phrasings)
            for k, question in enumerate(_rotate(train_q, s_index, cap)):
                yield GeneratedRow(_qa(self._wrap(spec, question, s_index + k), seed.answer, reference, {**meta, "phrasing": question}), "train", (str(path),))
            if mentions:
                yield from self._mentioned(spec, train_q, mentions, field, seed.answer, reference, meta, path)
            for question in eval_q:
                yield GeneratedRow(_qa(question, seed.answer, reference, {**meta, "phrasing": question}), "eval", (str(path),))
        for r_index, rule in enumerate(document.rules):
            field = f"build.documents.{d_index}.rules.{r_index}"
            check_rule(rule, field, text, path.name)
            split = _split_phrasings(rule.questions, spec, f"{field}.questions")
            # "quote" names the passage an open-book row shows: the references differ by side.
            meta = {"generator": self.name, "source": {"file": path.name, "quote": rule.quote}}
            for i, (shown, side) in enumerate(rule_cases(rule)):
                yield from self._fact(spec, f"rule{d_index}.{r_index}@{shown}", split, {"n": shown}, side.answer,
                                      side.reference or side.answer, meta, i, (str(path),))


def build_rows(spec: BuildSpec, resolve_path: Resolve) -> list[GeneratedRow]:
    from .base import get_generator

    rows = list(get_generator(spec.generator).generate(spec, resolve_path))
    train_questions = {_normalise(r.row.messages[-2].content) for r in rows if r.split == "train"}
    leaked = [r for r in rows if r.split == "eval" and _normalise(r.row.messages[-2].content) in train_questions]
    if leaked:
        raise TunewrightError(f"eval question also used for training: '{leaked[0].row.messages[-2].content}'", field="build")
    return rows
