"""One synthetic-data round, read top to bottom: check the spec, learn from the last review,
generate with the teacher, filter, and store every row (with its flags) in the review queue.

Every check that can fail on bad configuration runs before the first teacher call. A round whose
calls partly failed is stored with what succeeded and stays open; running again replays the same
prompts (same seed, same guidance), so the content-addressed cache answers the calls that were
already paid for and only the failed ones go out again.
"""

from __future__ import annotations

import hashlib
import inspect
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.synth import SynthSpec
from ..data.schema import ChatRow
from ..errors import TunewrightError
from ..io import sha256_file
from ..registry.events import canonical_json
from ..review.store import NewCandidate, QueueFilter, ReviewStore, RoundRecord, RoundSummary
from .call_failures import is_call_failure
from .chunking import chunk_document
from .feedback import build_guidance, guidance_from_json, guidance_to_json
from .filters import FILTERS, Candidate, FilterContext, run_filters
from .generators import SYNTH_GENERATORS, Failure, GenerationContext, Guidance, Produced
from .teachers import TEACHERS, CallCache

# Values a filter takes from the spec when its own settings leave them out, matched by parameter name.
_SPEC_DEFAULTS = {
    "forbidden": lambda spec: spec.constraints.forbidden,
    "json_schema": lambda spec: spec.output.json_schema if spec.output.kind == "json" else None,
    "min_answer_chars": lambda spec: spec.constraints.min_answer_chars,
    "max_answer_chars": lambda spec: spec.constraints.max_answer_chars,
}


@dataclass
class RoundResult:
    round: RoundRecord
    n_generated: int
    n_added: int
    filter_counts: dict[str, int]
    failures: list[dict[str, str]]
    usage: dict[str, Any]
    resumed: bool
    summaries: list[RoundSummary] = field(default_factory=list)


def check_plugins(spec: SynthSpec) -> None:
    """Teacher, generator and filter names of a synth spec must be registered: checked before any
    call is made. Here and not on the spec: the registries live above the config layer."""
    TEACHERS.get_class(spec.teacher.kind)
    for filter_spec in spec.filter_specs():
        FILTERS.get_class(filter_spec.kind)
    for generator in spec.generators:
        SYNTH_GENERATORS.get_class(generator.kind)


def build_teacher(spec: SynthSpec, cache: CallCache | None):
    cls = TEACHERS.get_class(spec.teacher.kind)
    return cls(TEACHERS.settings_for(spec.teacher.kind, spec.teacher.settings, "synth.teacher.settings"), cache=cache)


def build_generators(spec: SynthSpec) -> list[tuple[Any, float]]:
    out = []
    for i, gen in enumerate(spec.generators):
        cls = SYNTH_GENERATORS.get_class(gen.kind)
        settings = SYNTH_GENERATORS.settings_for(gen.kind, gen.settings, f"synth.generators[{i}].settings")
        out.append((cls(settings), gen.share))
    return out


def build_filters(spec: SynthSpec, teacher) -> list[Any]:
    filters = []
    for i, fspec in enumerate(spec.filter_specs()):
        cls = FILTERS.get_class(fspec.kind)
        known = cls.Settings.model_fields
        values = {name: default(spec) for name, default in _SPEC_DEFAULTS.items() if name in known}
        values.update(fspec.settings)
        settings = FILTERS.settings_for(fspec.kind, values, f"synth.filters[{i}].settings")
        injected = {"teacher": teacher} if "teacher" in inspect.signature(cls).parameters else {}
        try:
            filters.append(cls(**settings.model_dump(), **injected))
        except (TypeError, ValueError) as exc:
            raise TunewrightError(f"filter '{fspec.kind}': {exc}", field=f"synth.filters[{i}]") from None
    return filters


def allocate(total: int, shares: list[float]) -> list[int]:
    """Split ``total`` rows by share, largest remainders first, so counts always add up."""
    raw = [total * s / sum(shares) for s in shares]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])[: total - sum(counts)]:
        counts[i] += 1
    return counts


def spec_sha256(spec: SynthSpec) -> str:
    return hashlib.sha256(canonical_json(spec.model_dump(mode="json")).encode("utf-8")).hexdigest()


def _round_seed(base_seed: int, queue: str, number: int) -> int:
    digest = hashlib.sha256(f"{base_seed}:{queue}:{number}".encode()).hexdigest()
    return int(digest[:12], 16)


def _protected_texts(workspace) -> list[str]:
    """Text of every registered eval split: synthetic rows must not leak into what we measure on."""
    from ..data.prepare import read_split

    texts = []
    for record in workspace.registry.list_datasets():
        try:
            rows = read_split(record.path, "eval")
        except (OSError, TunewrightError):
            continue  # a dataset whose files were removed has nothing left to leak into
        texts.extend("\n".join(t for m in row.messages if m.role != "system" for t in m.text_parts()) for row in rows)
    return texts


def run_round(workspace, *, rows: int | None = None, queue: str | None = None, new_round: bool = False,
              teacher=None, embedder=None, seed: int | None = None) -> RoundResult:
    spec = _synth_spec(workspace)
    queue = queue or workspace.recipe.dataset_name
    base_seed = workspace.recipe.data.seed if seed is None else seed
    store = ReviewStore(workspace.registry)

    plan = _plan(workspace, spec, teacher)
    opened = _open_round(store, queue, spec, plan.teacher, new_round=new_round, embedder=embedder)
    seeds = _seed_rows(spec)
    ctx = GenerationContext(spec=spec, teacher=plan.teacher, round=opened.record.number,
                            rng=random.Random(_round_seed(base_seed, queue, opened.record.number)),
                            guidance=opened.guidance, seeds=seeds, accepted=opened.accepted, chunks=plan.chunks,
                            system_prompt=spec.system_prompt)
    produced = _generate(plan.generators, ctx, rows or spec.rows_per_round)
    candidates, filter_counts = _filter(workspace, plan.filters, produced.rows, opened.accepted + seeds)

    failure_dicts = [{"generator": f.generator, "kind": f.kind, "message": f.message} for f in produced.failures]
    usage = plan.teacher.usage.to_json()
    finished, added = store.finish_round(
        opened.record.id, _queue_entries(candidates), usage=usage, filter_counts=filter_counts,
        failures=_round_open_failures(produced.failures, candidates), n_generated=len(produced.rows),
        source_files=[sha256_file(d) for d in plan.documents])
    _assign_reviewers(workspace, store, queue, spec)

    return RoundResult(round=finished, n_generated=len(produced.rows), n_added=added, filter_counts=filter_counts,
                       failures=failure_dicts, usage=usage, resumed=opened.resumed,
                       summaries=store.round_summaries(queue))


def _synth_spec(workspace) -> SynthSpec:
    spec = workspace.recipe.synth
    if spec is None:
        raise TunewrightError("the recipe has no 'synth' section", file=workspace.recipe_path, field="synth")
    return spec


@dataclass
class _Plan:
    generators: list[tuple[Any, float]]
    documents: list[Path]
    chunks: list[Any]
    teacher: Any
    filters: list[Any]


def _plan(workspace, spec: SynthSpec, teacher) -> _Plan:
    """Everything that can be wrong with the recipe is found here, before any call is paid for."""
    check_plugins(spec)
    generators = build_generators(spec)
    documents = [workspace.path(d) for d in spec.documents]
    missing = [str(d) for d in documents if not d.is_file()]
    if missing:
        raise TunewrightError(f"document not found: {missing[0]}", file=workspace.recipe_path, field="synth.documents")
    chunks = [c for d in documents for c in chunk_document(d)]
    teacher = teacher or build_teacher(spec, CallCache(workspace.dir("cache") / "teacher"))
    return _Plan(generators, documents, chunks, teacher, build_filters(spec, teacher))


@dataclass
class _Opened:
    record: RoundRecord
    resumed: bool
    guidance: Guidance
    accepted: list[ChatRow]  # reviewed rows the generators may learn from


def _open_round(store: ReviewStore, queue: str, spec: SynthSpec, teacher, *, new_round: bool,
                embedder) -> _Opened:
    previous = store.rounds(queue)
    resumable = next((r for r in previous if r.status in ("running", "incomplete")), None)
    resumed = resumable is not None and not new_round
    accepted_now = store.candidates(queue, QueueFilter(status="accepted"))
    if resumed:
        # The same guidance and the same accepted rows as the first attempt: same prompts, so the
        # cache answers every call that already succeeded.
        guidance = guidance_from_json(resumable.guidance)
        kept = set(resumable.guidance.get("accepted_ids", []))
        accepted_now = [c for c in accepted_now if c.id in kept]
    else:
        guidance = build_guidance(store, queue, embedder=embedder)
    record = store.open_round(queue, spec_sha256=spec_sha256(spec), teacher_model=teacher.model,
                              guidance={**guidance_to_json(guidance), "accepted_ids": [c.id for c in accepted_now]},
                              new_round=new_round)
    accepted = [ChatRow(messages=c.messages, reference=c.reference,
                        meta={"id": f"cand-{c.id}", **({"topic": c.topic} if c.topic else {})}) for c in accepted_now]
    return _Opened(record, resumed, guidance, accepted)


def _seed_rows(spec: SynthSpec) -> list[ChatRow]:
    return [ChatRow(messages=[{"role": "user", "content": s.question}, {"role": "assistant", "content": s.answer}],
                    meta={"id": f"seed-{i}", **({"topic": s.topic} if s.topic else {})})
            for i, s in enumerate(spec.seeds)]


def _generate(generators: list[tuple[Any, float]], ctx: GenerationContext, total: int) -> Produced:
    out = Produced()
    for (generator, _share), count in zip(generators, allocate(total, [share for _, share in generators])):
        if count == 0:
            continue
        produced = generator.generate(ctx, count)
        out.rows.extend(produced.rows)
        out.failures.extend(produced.failures)
    return out


def _filter(workspace, filters: list[Any], rows: list[ChatRow],
            known: list[ChatRow]) -> tuple[list[Candidate], dict[str, int]]:
    candidates = [Candidate(id=str(i), row=row) for i, row in enumerate(rows)]
    context = FilterContext(accepted=known, protected_texts=_protected_texts(workspace))
    return candidates, run_filters(filters, candidates, context)


def _queue_entries(candidates: list[Candidate]) -> list[NewCandidate]:
    """Every row goes to review, flagged ones too, so a person can see and overrule a filter."""
    # The judge's rationale travels with the provenance so reviewers see why a row scored as it did.
    return [NewCandidate(row=c.row, provenance={**c.row.meta.get("provenance", {}),
                                                 **({"judge": c.row.meta["judge"]} if "judge" in c.row.meta else {})},
                         flags=[{"filter": f.filter, "reason": f.reason} for f in c.flags]) for c in candidates]


def _round_open_failures(failures: list[Failure], candidates: list[Candidate]) -> list[dict[str, str]]:
    """Calls that failed (as opposed to rows the generator or a filter refused) keep the round open
    for a rerun: the generators' by their failure kind, the filters' by their flag's failed call."""
    return ([{"generator": f.generator, "kind": f.kind, "message": f.message}
             for f in failures if is_call_failure(f.kind)]
            + [{"generator": flag.filter, "kind": flag.filter, "message": flag.reason}
               for c in candidates for flag in c.flags if flag.failed_call and is_call_failure(flag.failed_call)])


def _assign_reviewers(workspace, store: ReviewStore, queue: str, spec: SynthSpec) -> None:
    review = spec.review
    if review.reviewers_per_item > 1:
        from ..review.reviewers import reviewer_names

        names = reviewer_names(workspace.registry)
        if len(names) >= review.reviewers_per_item:
            store.assign(queue, names, review.reviewers_per_item)
