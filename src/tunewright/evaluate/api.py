"""The evaluation stage: base vs tuned on held-out rows, stored in the registry, written as a report."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from statistics import fmean
from typing import Callable

from ..data.api import load_split
from ..data.parts import content_text
from ..errors import TunewrightError
from ..io import atomic_write_jsonl
from ..models import load_model, load_tokenizer
from ..data.schema import ChatRow
from ..methods.attach import load_adapter
from ..models.adapters import resolve_ref
from ..reports import EVAL_REPORT, DatasetRef, EvalReport, KindScores, ScoreSummary
from ..retrieval.context import retriever_for
from . import questions as customer
from .forgetting import ForgettingCheck, summary
from .report import write_report
from .scoring import ModelScores, Scored, score_model, spread

MAX_EXAMPLES = 300


def evaluate(
    workspace,
    *,
    adapter: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    questions: str | Path | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_phase: Callable[[str, int], None] | None = None,
) -> EvalReport:
    spec = workspace.recipe.eval
    adapter = adapter or workspace.recipe.train.adapter or workspace.recipe.name
    split = split or spec.split
    progress = {"on_batch": on_batch, "on_phase": on_phase}
    if workspace.recipe.train.vision is not None:
        # A native vision-language adapter answers rows with their images (the recipe trains it so).
        from .vision import score_vision

        if questions is not None or spec.questions is not None:
            raise TunewrightError("customer questions are asked of text models; a vision-language adapter is "
                                  "evaluated on held-out rows with images", field="eval.questions")
        scored = score_vision(workspace, adapter=adapter, dataset=dataset or spec.dataset, split=split,
                              limit=limit or spec.limit, **progress)
    else:
        scored = _score_text(workspace, adapter=adapter, dataset=dataset or spec.dataset, split=split,
                             limit=limit or spec.limit, questions=questions, **progress)
    return _record(workspace, adapter, split, scored)


def _score_text(workspace, *, adapter: str, dataset: str | None, split: str, limit: int | None, questions,
                on_batch, on_phase) -> Scored:
    spec = workspace.recipe.eval
    registry = workspace.registry
    resolved = resolve_ref(adapter, base_model=workspace.recipe.base_model, registry=registry)
    dataset_record, rows = load_split(workspace, dataset, split)
    rows = spread(rows, limit)
    if not rows:
        raise TunewrightError(f"the {split} split of dataset '{dataset_record.name}' is empty")
    # An open-book adapter answers with its records, and so does the base it is compared with: the
    # gain shown is then what training added to the same retrieval. Forgetting stays a property of
    # the weights (both models see the same prompts, without records).
    retriever = retriever_for(workspace, resolved.adapter_path)
    if retriever is not None:
        rows = [_with_records(row, retriever) for row in rows]
    asker = _customer_questions(workspace, questions, dataset_record, rows, on_phase=on_phase, on_batch=on_batch,
                                prepare=retriever.augment if retriever is not None else None)
    # Read and check the forgetting sets now: a bad row should fail before minutes of model loading.
    forgetting = ForgettingCheck.from_workspace(workspace, batch_size=spec.batch_size, on_phase=on_phase,
                                                on_batch=on_batch)

    tokenizer = load_tokenizer(resolved.base, padding_side="left")
    model = load_model(resolved.base)

    def run(ref: str, net) -> ModelScores:
        if on_phase:
            on_phase(ref, len(rows))
        return score_model(ref, net, tokenizer, rows, spec.metrics, max_new_tokens=spec.max_new_tokens,
                           batch_size=spec.batch_size, on_batch=on_batch)

    before = run("base", model)
    base_answers = asker.ask("base", model, tokenizer) if asker else None
    if forgetting is not None:
        forgetting.observe_base(model, tokenizer)
    # Unmerged first: the forgetting check needs the base back (disable_adapter) beside the tuned model.
    attached = load_adapter(model, resolved.adapter_path, merge=False)
    if forgetting is not None:
        forgetting.measure_drift(attached.model, base_context=attached.model.disable_adapter)
    tuned = _merged(attached.model, attached.peft_type)
    forgetting_details = forgetting.measure_retention(tuned) if forgetting is not None else None
    after = run(adapter, tuned)
    asked = None
    if asker is not None:
        asked = customer.score_questions(asker.questions, base_answers, asker.ask("tuned", tuned, tokenizer),
                                         system_prompt=asker.system_prompt)
    return Scored(resolved, dataset_record, rows, before, after, forgetting_details, asked)


def _record(workspace, adapter: str, split: str, scored: Scored) -> EvalReport:
    """results.jsonl, report.json and report.html under reports/<adapter>/, and both models'
    scores in the registry."""
    registry = workspace.registry
    resolved, dataset_record, rows, before, after = (scored.resolved, scored.dataset, scored.rows, scored.before,
                                                     scored.after)
    forgetting_details, asked = scored.forgetting, scored.asked
    out_dir = workspace.dir("reports") / adapter
    results = [
        {"question": question_text(row), "expected": row.expected, "base_response": b, "tuned_response": a,
         "before": pb, "after": pa, "meta": row.meta}
        for row, b, a, pb, pa in zip(rows, before.responses, after.responses, before.per_example, after.per_example)
    ]
    results_path = out_dir / "results.jsonl"
    atomic_write_jsonl(results_path, results)

    adapter_record = registry.get_adapter(adapter) if resolved.adapter_id is not None else None
    training = {}
    if adapter_record is not None and adapter_record.run_id is not None:
        training = registry.get_run(adapter_record.run_id).metrics or {}
    report = EvalReport(
        format=EVAL_REPORT.version,
        adapter=adapter,
        base_model=resolved.base.ref,
        dataset=DatasetRef(name=dataset_record.name, version=dataset_record.version),
        split=split,
        n_examples=len(rows),
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        before=ScoreSummary(metrics=before.metrics, seconds=before.seconds),
        after=ScoreSummary(metrics=after.metrics, seconds=after.seconds),
        training=training,
        examples=_interesting(results),
    )
    if forgetting_details is not None:
        report["forgetting"] = forgetting_details
    if asked is not None:
        report["questions"] = asked
    kinds = by_kind(rows, before.per_example, after.per_example)
    if kinds:
        report["by_kind"] = kinds
    json_path, html_path = write_report(out_dir, report)
    for scores, adapter_id in ((before, None), (after, resolved.adapter_id)):
        metrics = dict(scores.metrics)
        if forgetting_details is not None and scores is after:
            metrics["forgetting"] = summary(forgetting_details)  # nested: the task metrics stay flat
        if asked is not None:
            metrics["questions"] = customer.summary(asked, "tuned" if scores is after else "base")
        registry.add_evaluation(
            model_ref=scores.model_ref, adapter_id=adapter_id, dataset_id=dataset_record.id, split=split,
            metrics=metrics, n_examples=len(rows), results_path=str(results_path), report_path=str(html_path),
        )
    report["paths"] = {"json": str(json_path), "html": str(html_path), "results": str(results_path)}
    return report


def by_kind(rows: list, before: list[dict[str, float]], after: list[dict[str, float]]) -> dict[str, KindScores]:
    """Held-out scores per ``meta.kind`` (screenshot, label, audio, ...), in order of first appearance;
    empty when no row names a kind. Rows without one are counted under "other"."""
    if not any(row.meta.get("kind") for row in rows):
        return {}
    groups: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(str(row.meta.get("kind") or "other"), []).append(index)

    def means(per_example: list[dict[str, float]], indices: list[int]) -> dict[str, float]:
        return {name: fmean(per_example[i][name] for i in indices) for name in per_example[0]}

    return {kind: KindScores(n=len(indices), base=means(before, indices), tuned=means(after, indices))
            for kind, indices in groups.items()}


def checked_questions(workspace, dataset: str, override: str | None = None) -> customer.QuestionFile | None:
    """The customer questions (``override`` or the recipe's ``eval.questions``), read and refused if any
    is in the training rows of ``dataset`` (``name@version``). `tunewright run` calls this before it
    trains, so a question a training row asks fails in seconds, not after the training."""
    found = customer.questions_for(workspace, override)
    if found is None:
        return None
    _, train_rows = load_split(workspace, dataset, "train")
    customer.check_no_leak(found, train_rows, dataset=dataset)
    return found


def _customer_questions(workspace, override, dataset_record, rows, **progress) -> customer.QuestionAsker | None:
    """Read, check and leak-test the questions file now: a bad line should fail before any model loads."""
    found = checked_questions(workspace, f"{dataset_record.name}@{dataset_record.version}", override)
    if found is None:
        return None
    spec = workspace.recipe.eval
    return customer.QuestionAsker(found, system_prompt=customer.shared_system_prompt(rows),
                                  max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size, **progress)


def question_text(row: ChatRow) -> str:
    """The question a row asks, for the report: its last user turn, an image or audio part as the
    stored file's name in brackets."""
    return content_text(row.messages[-2].content)


def _with_records(row: ChatRow, retriever) -> ChatRow:
    if row.meta.get("retrieved"):
        return row
    messages = [*retriever.prompt_for(row), row.messages[-1].model_dump()]
    return ChatRow(messages=messages, reference=row.reference, meta={**row.meta, "retrieved_at_eval": True})


def _merged(model, peft_type: str):
    """Fold the adapter in where its method allows: merged weights generate at base-model speed."""
    from ..methods import merge_policy

    return model.merge_and_unload() if merge_policy(peft_type).mergeable else model


def _interesting(results: list[dict], limit: int = MAX_EXAMPLES) -> list[dict]:
    """Regressions first, then what the tuned model still misses, then fixes, then agreements."""

    def rank(result: dict) -> int:
        before, after = result["before"].get("contains", 0.0), result["after"].get("contains", 0.0)
        if after < before:
            return 0
        if not after:
            return 1
        return 2 if after > before else 3

    ordered = sorted(results, key=rank)  # stable: eval order within each group
    for result in ordered:
        result["verdict"] = ("regressed", "still wrong", "fixed", "both right")[rank(result)]
    return ordered[:limit]
