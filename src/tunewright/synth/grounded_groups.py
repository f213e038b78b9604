"""Facts across table rows: the members of a group, its lowest and highest by a column, pairs compared.

Customers ask "which is your cheapest tent?" and "which backpack is lighter?", which no single row
answers. A small model cannot compute these at answer time, so the builder states them as facts,
each asked in several phrasings like any other fact (Physics of Language Models 3.1: facts become
extractable when seen restated). Nothing here knows a domain: group column, labels and patterns
come from the recipe.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator

from ..config import GroupSpec, QuestionSet
from ..errors import TunewrightError
from .quantities import parse_quantity


@dataclass(frozen=True)
class GroupFact:
    key: str  # identifies the fact for the held-out split and for meta
    questions_field: str  # recipe field of its question patterns, for the phrasing split and errors
    patterns: QuestionSet  # its questions, answer, reference and own phrasing cap
    values: dict[str, str]  # placeholder values for the patterns
    line: int  # source line of the row the fact is about (the winner); first member for membership
    group: str | None = None  # the group a members/lowest/highest fact states; None for a compared pair
    wrong_values: dict[str, str] | None = None  # a compared pair's values with the loser as the winner
    summarised: bool = True  # stated in the group's summary passage (the rest of a group is not: members is)


# The group of the whole table's lowest and highest: its summary passage states them (oracle of those
# rows in open-book training). A table with a group of that name is refused where they are asked.
WHOLE_TABLE = "*"


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _ordered(members: list[tuple[int, dict]], column: str, field: str, path_name: str) -> list[tuple[float, int, dict]]:
    """Members with a comparable value in ``column``, smallest first; mixed dimensions are an error."""
    parsed = []
    for line, record in members:
        quantity = parse_quantity(record.get(column, ""))
        if quantity is not None:
            parsed.append((quantity, line, record))
    dimensions = {q[0] for q, _, _ in parsed}
    if len(dimensions) > 1:
        raise TunewrightError(f"column '{column}' mixes {', '.join(sorted(dimensions))}: cannot compare its values",
                              file=path_name, field=field)
    return sorted(((q[1], line, record) for q, line, record in parsed), key=lambda t: (t[0], t[1]))


def _extreme(members: list[tuple[int, dict]], column: str, direction: str, field: str,
             path_name: str) -> tuple[int, dict] | None:
    """(line, row) of the lowest or highest value in ``column``; None when fewer than two rows have a
    value or all values are equal (no question a customer needs answered)."""
    ordered = _ordered(members, column, field, path_name)
    if len(ordered) < 2 or ordered[0][0] == ordered[-1][0]:
        return None
    _, line, winner = ordered[0] if direction == "lowest" else ordered[-1]
    return line, winner


def group_facts(groups: GroupSpec, records: list[tuple[int, dict]], header: set[str], field: str,
                path_name: str) -> Iterator[GroupFact]:
    """``records``: (source line, cleaned row) pairs of the table."""
    for column in [groups.by, groups.name, *groups.lowest, *groups.highest, *(c.column for c in groups.compare),
                   *groups.overall_lowest, *groups.overall_highest]:
        if column not in header:
            raise TunewrightError(f"column '{column}' is not in the table (has: {', '.join(sorted(header))})",
                                  file=path_name, field=field)
    by_group: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for line, record in records:
        if record.get(groups.by):
            by_group[record[groups.by]].append((line, record))
    if WHOLE_TABLE in by_group and (groups.overall_lowest or groups.overall_highest):
        raise TunewrightError(f"a '{groups.by}' value is '{WHOLE_TABLE}', the name of the whole table's group: "
                              "rename it", file=path_name, field=field)
    for group, members in by_group.items():
        base = {"group": group, "item": groups.labels.get(group, group)}
        names = [record[groups.name] for _, record in members]
        if groups.members is not None:
            yield GroupFact(f"group@{group}:members", f"{field}.members.questions", groups.members,
                            {**base, "names": _join(names)}, members[0][0], group)
        if len(members) < 2:
            continue  # the cheapest of one is no question a customer needs answered
        if groups.others is not None:
            # Asked with one member named: without it the model answers such a question by listing the
            # one record retrieval showed (peachtree: "Besides the Trailhawk boots, what other footwear
            # ..." -> "our footwear: the Trailhawk Hiking Boot").
            for line, record in members:
                rest = [name for name in names if name != record[groups.name]]
                yield GroupFact(f"group@{group}:others:{line}", f"{field}.others.questions", groups.others,
                                {**record, **base, "names": _join(names), "others": _join(rest)}, line, group,
                                summarised=False)
        for direction, sets in (("lowest", groups.lowest), ("highest", groups.highest)):
            for column, patterns in sets.items():
                extreme = _extreme(members, column, direction, f"{field}.{direction}.{column}", path_name)
                if extreme is None:
                    continue
                line, winner = extreme
                yield GroupFact(f"group@{group}:{direction}:{column}", f"{field}.{direction}.{column}.questions",
                                patterns, {**winner, **base, "names": _join(names)}, line, group)
        for c_index, compare in enumerate(groups.compare):
            ordered = _ordered(members, compare.column, f"{field}.compare.{c_index}", path_name)
            for i in range(len(ordered)):
                for j in range(i + 1, len(ordered)):
                    # Both orders of asking: the answer must not depend on which name came first.
                    for a, b in ((ordered[i], ordered[j]), (ordered[j], ordered[i])):
                        fact = _compared(groups, compare, c_index, field, a, b, f"group@{group}", base)
                        if fact is not None:
                            yield fact
    for c_index, compare in enumerate(groups.compare):
        if compare.across_groups:
            yield from _compared_across(groups, compare, c_index, field, path_name, by_group)
    yield from _overall(groups, records, field, path_name)


def _overall(groups: GroupSpec, records: list[tuple[int, dict]], field: str, path_name: str) -> Iterator[GroupFact]:
    """The lowest and highest of the whole table by a column (group ``WHOLE_TABLE``)."""
    names = _join([record[groups.name] for _, record in records])
    for direction, sets in (("lowest", groups.overall_lowest), ("highest", groups.overall_highest)):
        for column, patterns in sets.items():
            where = f"{field}.overall_{direction}.{column}"
            extreme = _extreme(records, column, direction, where, path_name)
            if extreme is None:
                continue
            line, winner = extreme
            group = winner.get(groups.by, "")
            base = {"group": group, "item": groups.labels.get(group, group), "names": names}
            yield GroupFact(f"all:{direction}:{column}", f"{where}.questions", patterns, {**winner, **base}, line,
                            WHOLE_TABLE)


def _compared(groups: GroupSpec, compare, c_index: int, field: str, a: tuple, b: tuple, scope: str,
              base: dict | None) -> GroupFact | None:
    """``a`` and ``b`` (value, line, record) compared, asked in that order; None for a tie. ``base``:
    the {group} and {item} values; None: the winner's."""
    if a[0] == b[0]:
        return None
    low, high = (a, b) if a[0] < b[0] else (b, a)
    win, lose = (low, high) if compare.prefer == "lowest" else (high, low)
    if base is None:
        group = win[2][groups.by]
        base = {"group": group, "item": groups.labels.get(group, group)}
    asked = {"a": a[2][groups.name], "b": b[2][groups.name]}
    values = {**{f"other_{k}": v for k, v in lose[2].items()}, **win[2], **base, **asked}
    wrong = {**{f"other_{k}": v for k, v in win[2].items()}, **lose[2], **base, **asked}
    return GroupFact(f"{scope}:compare{c_index}:{a[1]}-{b[1]}", f"{field}.compare.{c_index}.questions",
                     compare, values, win[1], wrong_values=wrong)


def _compared_across(groups: GroupSpec, compare, c_index: int, field: str, path_name: str,
                     by_group: dict[str, list[tuple[int, dict]]]) -> Iterator[GroupFact]:
    """Each row against ``across_groups`` rows of other groups: all pairs across a table grow with
    its square, so a fixed number per row, chosen by a seed derived from the row's line (the same
    rows on every build). One order of asking per pair, alternating, to keep the count linear."""
    quantities = {group: _ordered(members, compare.column, f"{field}.compare.{c_index}", path_name)
                  for group, members in by_group.items()}
    seen: set[frozenset[int]] = set()
    for group, ordered in quantities.items():
        others = [item for g, items in quantities.items() if g != group for item in items]
        for item in ordered:
            rng = random.Random(f"{field}.compare.{c_index}:{item[1]}")
            partners = [o for o in others if o[0] != item[0] and frozenset((item[1], o[1])) not in seen]
            for other in rng.sample(partners, min(compare.across_groups, len(partners))):
                seen.add(frozenset((item[1], other[1])))
                a, b = (item, other) if len(seen) % 2 else (other, item)
                fact = _compared(groups, compare, c_index, field, a, b, "table", None)
                if fact is not None:
                    yield fact


def group_summaries(groups: GroupSpec, records: list[tuple[int, dict]], header: set[str], field: str,
                    path_name: str) -> dict[str, tuple[str, list[str]]]:
    """One passage per group stating what its facts say (members, lowest, highest), in the recipe's
    own answer patterns: what an open-book prompt can quote for "which is your cheapest tent?", which
    no single row answers; one more for the whole table's lowest and highest when the recipe asks
    them. Compared pairs are left out: a table's pairs grow with its square. Each comes with the
    questions its facts answer (the patterns filled in), to be found by instead of its text."""
    passages: dict[str, list[str]] = defaultdict(list)
    asked: dict[str, list[str]] = defaultdict(list)
    for fact in group_facts(groups, records, header, field, path_name):
        if fact.group is not None and fact.summarised:
            passages[fact.group].append(fact.patterns.answer.format(**fact.values))
            asked[fact.group].extend(q.format(**fact.values) for q in fact.patterns.questions)

    def title(group: str) -> str:
        if group == WHOLE_TABLE:
            return f"all of {path_name}"
        return f"{groups.labels.get(group, group)} ({groups.by}: {group})"

    return {group: (f"{title(group)}: {' '.join(texts)}", asked[group]) for group, texts in passages.items()}
