"""Why did the model answer that? Attribute an answer to parts of its prompt, base vs tuned.

captum's LLM attribution does the work: feature ablation over prompt segments (no gradients, one
forward pass per segment) or integrated gradients on the embedding layer, summed per segment. The
prompt is rendered with the model's own chat template and the target is the model's own greedy
answer, so what is explained is the answer a user of that model actually gets.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import torch

from ..errors import TunewrightError

METHODS = ("ablation", "gradient")
MAX_SEGMENTS = 16  # user segments; each costs one forward pass (ablation) and one table column
IG_STEPS = 8  # integrated-gradients steps: each answer token costs this many forward+backward passes
SYSTEM, USER = "system", "user"

_WORD = re.compile(r"\s*\S+")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")
_CLAUSE_END = re.compile(r"[,;:)]$")


@dataclass(frozen=True)
class Segment:
    text: str
    role: str  # "system" or "user": which message of the conversation it is part of

    @property
    def label(self) -> str:
        words = self.text.strip()
        short = words if len(words) <= 28 else words[:27] + "…"
        return f"[system] {short}" if self.role == SYSTEM else short


@dataclass
class Explanation:
    method: str
    segments: list[Segment]
    answer: str
    answer_ids: list[int]
    answer_tokens: list[str]
    seq_attr: torch.Tensor  # (n_segments,): effect on log p(whole answer)
    token_attr: torch.Tensor  # (n_answer_tokens, n_segments): effect on log p(each answer token)
    answer_logprobs: torch.Tensor  # (n_answer_tokens,) under the full prompt
    seconds: float
    # Gradient only: log-probs under the integrated-gradients baseline prompt (segment tokens
    # replaced), so completeness (attributions sum to the log-prob change) can be checked.
    baseline_logprobs: torch.Tensor | None = None

    @property
    def logprob_change(self) -> float | None:
        """Gradient only: log p(answer | prompt) - log p(answer | baseline prompt)."""
        if self.baseline_logprobs is None:
            return None
        return float(self.answer_logprobs.sum() - self.baseline_logprobs.sum())

    @property
    def completeness_gap(self) -> float | None:
        """How far the attributions' sum is from ``logprob_change``: integrated gradients' own error."""
        change = self.logprob_change
        return None if change is None else float(self.seq_attr.sum()) - change

    def top(self, k: int = 3) -> list[tuple[Segment, float]]:
        order = sorted(range(len(self.segments)), key=lambda j: -abs(float(self.seq_attr[j])))
        return [(self.segments[j], float(self.seq_attr[j])) for j in order[:k]]

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method, "answer": self.answer, "answer_ids": self.answer_ids,
            "answer_tokens": self.answer_tokens, "seq_attr": self.seq_attr.tolist(),
            "token_attr": self.token_attr.tolist(), "answer_logprob": float(self.answer_logprobs.sum()),
            "answer_logprobs": self.answer_logprobs.tolist(), "seconds": round(self.seconds, 3),
            "logprob_change": self.logprob_change, "completeness_gap": self.completeness_gap,
            "top": [{"segment": s.text, "role": s.role, "attr": v} for s, v in self.top()],
        }


# -- segments -----------------------------------------------------------------------------------


def split_prompt(text: str, max_segments: int = MAX_SEGMENTS) -> list[str]:
    """Sentences, then clauses, then word groups, down to single words while the budget allows.

    Pieces keep their leading whitespace (" much", not "much "), as BPE and SentencePiece attach a
    space to the word after it; so removing a piece removes whole tokens and each prompt token falls
    inside one piece. The pieces join back to ``text`` exactly.
    """
    words = _WORD.findall(text)
    if not words:
        raise TunewrightError("the prompt is empty", field="prompt")
    words[-1] += text[sum(map(len, words)):]  # trailing whitespace stays with the last word
    pieces: list[tuple[int, int]] = []
    start = 0
    for i, word in enumerate(words):
        if i > start and "\n" in word[: len(word) - len(word.lstrip())]:  # a line break ends a sentence too
            pieces.append((start, i))
            start = i
        if _SENTENCE_END.search(word.rstrip()):
            pieces.append((start, i + 1))
            start = i + 1
    if start < len(words):
        pieces.append((start, len(words)))
    if len(pieces) > max_segments:  # more sentences than columns: group neighbours evenly
        bounds = [pieces[round(k * len(pieces) / max_segments)][0] for k in range(max_segments)] + [len(words)]
        pieces = list(zip(bounds, bounds[1:]))
    while len(pieces) < max_segments:
        i = max(range(len(pieces)), key=lambda k: (pieces[k][1] - pieces[k][0], -k))
        a, b = pieces[i]
        if b - a < 2:
            break
        clauses = [j + 1 for j in range(a, b - 1) if _CLAUSE_END.search(words[j])]
        cut = min(clauses, key=lambda j: abs(j - (a + b) / 2)) if clauses else (a + b) // 2
        pieces[i : i + 1] = [(a, cut), (cut, b)]
    return ["".join(words[a:b]) for a, b in pieces]


def _render(tokenizer, messages: Sequence[dict]) -> str:
    from ..models.chat import render

    return render(tokenizer, messages)


def _encode(tokenizer, text: str) -> torch.Tensor:
    # As evaluation and serving do: the template already holds every special token it wants.
    return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


def _messages(roles: Sequence[str], values: Sequence[str]) -> list[dict]:
    system = "".join(v for r, v in zip(roles, values) if r == SYSTEM)
    user = "".join(v for r, v in zip(roles, values) if r == USER)
    return ([{"role": SYSTEM, "content": system}] if SYSTEM in roles else []) + [{"role": USER, "content": user}]


def template_default_system(tokenizer, user_text: str) -> str | None:
    """The system prompt the chat template inserts when none is given (SmolLM2 has one), or None.

    Found by rendering once with a marker as the system prompt and once without one: where the two
    renders agree around the marker, the text in its place is the template's default.
    """
    from jinja2 import TemplateError

    marker = "\u2063TUNEWRIGHT-SYSTEM\u2063"
    user = {"role": USER, "content": user_text}
    try:
        marked = _render(tokenizer, [{"role": SYSTEM, "content": marker}, user])
    except (TemplateError, ValueError):  # templates that refuse a system turn
        return None
    plain = _render(tokenizer, [user])
    head, found, tail = marked.partition(marker)
    if not found or len(plain) < len(head) + len(tail) or not (plain.startswith(head) and plain.endswith(tail)):
        return None
    return plain[len(head) : len(plain) - len(tail)] or None


def build_segments(tokenizer, prompt: str, *, system: str | None = None,
                   segments: Sequence[str] | None = None, max_segments: int = MAX_SEGMENTS) -> list[Segment]:
    """The system prompt (given, or the template's default) as one segment, then the user message's pieces."""
    if not prompt.strip():
        raise TunewrightError("the prompt is empty", field="prompt")
    if segments is not None:
        if "".join(segments) != prompt or not all(s.strip() for s in segments):
            raise TunewrightError("segments must be non-blank pieces that join to the prompt exactly", field="segments")
        pieces = list(segments)
    else:
        pieces = split_prompt(prompt.strip(), max_segments)
    system = system if system is not None else template_default_system(tokenizer, "".join(pieces))
    head = [Segment(system, SYSTEM)] if system and system.strip() else []
    return head + [Segment(p, USER) for p in pieces]


# -- scoring ------------------------------------------------------------------------------------


class _Scorer(torch.nn.Module):
    """The model as captum calls it, with prompt learning's virtual-token logits cut off.

    peft prepends virtual tokens (prompt and p-tuning) and returns their logits too; captum reads
    logits by position in the ids it passed, so those extra positions would shift every score.
    """

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
        return SimpleNamespace(logits=logits[:, logits.shape[1] - input_ids.shape[1] :])


@torch.no_grad()
def _token_logprobs(scorer: _Scorer, prompt_ids: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    ids = torch.cat([prompt_ids, answer.unsqueeze(0)], dim=1)
    logits = scorer(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    start = prompt_ids.shape[1] - 1  # logits at position i predict token i + 1
    logp = logits[0, start : start + len(answer)].log_softmax(-1)
    return logp.gather(-1, answer.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def greedy_answer(model, tokenizer, prompt_ids: torch.Tensor, max_new_tokens: int) -> list[int]:
    """The model's greedy continuation up to (not including) its end-of-turn token."""
    from ..models.generation import generate_ids, pad_id
    from ..models.stops import stop_token_ids

    stops = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    new = generate_ids(model, [prompt_ids[0].tolist()], max_new_tokens=max_new_tokens, stop_ids=stops,
                       pad=pad_id(tokenizer))[0]
    end = next((i for i, t in enumerate(new) if t in stops), len(new))
    return new[:end] or new[:1]  # an immediate end of turn is the answer then: explain the silence


@contextmanager
def _quiet_token_names():
    # captum warns whenever an answer token is not a whole character (byte-level BPE splits accents
    # and emoji) and then names the tokens one by one, which is what the report wants anyway.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(Skipping this token|Pretty tokens length)", category=UserWarning)
        yield


def _ablation(scorer: _Scorer, tokenizer, segments: list[Segment], answer: torch.Tensor):
    from captum.attr import FeatureAblation, LLMAttribution, TextTemplateInput

    roles = [s.role for s in segments]

    def prompt_ids(*values: str) -> torch.Tensor:
        return _encode(tokenizer, _render(tokenizer, _messages(roles, values)))

    # An ablated segment is removed (captum's default baseline ""), an ablated system prompt is an
    # empty system turn, so the template's default does not slip back in.
    inp = TextTemplateInput(template=prompt_ids, values=[s.text for s in segments])
    attribution = LLMAttribution(FeatureAblation(scorer), tokenizer)
    with torch.no_grad(), _quiet_token_names():
        # One forward pass over prompt + answer per ablation, instead of one per answer token.
        result = attribution.attribute(inp, target=answer, forward_in_tokens=False)
    return result.seq_attr, result.token_attr, result.output_tokens, None


def _segment_of_tokens(tokenizer, text: str, segments: list[Segment]) -> list[int]:
    """For each prompt token: the index of the segment it belongs to, or -1 for the template's own."""
    spans: list[tuple[int, int]] = []
    user_text = "".join(s.text for s in segments if s.role == USER)
    user_at = text.rfind(user_text)
    cursor = user_at
    for segment in segments:
        if segment.role == SYSTEM:
            at = text.find(segment.text)
            spans.append((at, at + len(segment.text)) if 0 <= at < user_at else (-1, -1))
        else:
            spans.append((cursor, cursor + len(segment.text)))
            cursor += len(segment.text)
    if user_at < 0 or (-1, -1) in spans:
        raise TunewrightError("the chat template changes the prompt text, so its tokens cannot be matched to "
                              "segments; use --method ablation", field="method")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    owners = []
    for start, end in encoded["offset_mapping"]:
        piece = text[start:end]
        # A token belongs where its last visible character is (" much" belongs to " much").
        at = start + len(piece.rstrip()) - 1 if piece.strip() else start
        owners.append(next((j for j, (a, b) in enumerate(spans) if a <= at < b), -1))
    return owners


def _gradient(scorer: _Scorer, tokenizer, segments: list[Segment], answer: torch.Tensor, n_steps: int):
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    if not getattr(tokenizer, "is_fast", False):
        raise TunewrightError("gradient attribution needs a fast tokenizer (offsets); use --method ablation",
                              field="method")
    text = _render(tokenizer, _messages([s.role for s in segments], [s.text for s in segments]))
    ids = _encode(tokenizer, text)
    owners = torch.tensor(_segment_of_tokens(tokenizer, text, segments))
    if len(owners) != ids.shape[1]:
        raise TunewrightError("the tokenizer's offsets do not match its tokens; use --method ablation", field="method")

    class SegmentTokens(TextTokenInput):
        """captum's token input with features chosen by position, not id: the template's own tokens
        ('user', newlines) also occur inside messages, and must stay fixed in the baseline."""

        def __init__(self) -> None:  # deliberately not super(): that tokenises again and selects by id
            self.inp_tensor = ids
            self.itp_mask = (owners >= 0).unsqueeze(0)
            self.itp_tensor = ids[self.itp_mask].unsqueeze(0)
            self.skip_tokens = None
            self.values = tokenizer.convert_ids_to_tokens(self.itp_tensor[0].tolist())
            self.tokenizer = tokenizer
            self.n_itp_features = len(self.values)
            # captum's convention: the unknown token stands in for an absent one
            self.baselines = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0

    inp = SegmentTokens()
    layer = scorer.model.get_input_embeddings()
    attribution = LLMGradientAttribution(LayerIntegratedGradients(scorer, layer), tokenizer)
    # Only the embedding output needs a gradient: weight gradients would double the backward pass.
    trainable = [p for p in scorer.parameters() if p.requires_grad]
    try:
        for p in trainable:
            p.requires_grad_(False)
        with _quiet_token_names():
            result = attribution.attribute(inp, target=answer, n_steps=n_steps)
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise TunewrightError(f"gradient attribution does not work for this model ({type(exc).__name__}: "
                              f"{(str(exc).splitlines() or [''])[0][:160]}); use --method ablation", field="method") from None
    finally:
        for p in trainable:
            p.requires_grad_(True)
    kept = owners[owners >= 0]
    to_segments = torch.nn.functional.one_hot(kept, len(segments)).to(result.token_attr.dtype)
    token_attr = result.token_attr @ to_segments  # summing keeps completeness per segment
    baseline_ids = inp.to_model_input(torch.zeros_like(inp.to_tensor()))
    return token_attr.sum(0), token_attr, result.output_tokens, baseline_ids


def explain_answer(model, tokenizer, prompt: str, *, method: str = "ablation", segments: Sequence[str] | None = None,
                   system: str | None = None, max_new_tokens: int = 48, target: str | Sequence[int] | None = None,
                   n_steps: int = IG_STEPS, max_segments: int = MAX_SEGMENTS) -> Explanation:
    """Attribute ``model``'s answer to ``prompt`` (its own greedy answer unless ``target`` is given)
    to the system prompt and the pieces of the user message; no workspace needed."""
    check_method(method)
    if max_new_tokens < 1:
        raise TunewrightError("max_new_tokens must be at least 1", field="max_new_tokens")
    parts = build_segments(tokenizer, prompt, system=system, segments=segments, max_segments=max_segments)
    started = time.perf_counter()
    model.eval()
    scorer = _Scorer(model)
    prompt_ids = _encode(tokenizer, _render(tokenizer, _messages([s.role for s in parts], [s.text for s in parts])))
    if target is None:
        answer_ids = greedy_answer(model, tokenizer, prompt_ids, max_new_tokens)
    elif isinstance(target, str):
        answer_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    else:
        answer_ids = list(target)
    if not answer_ids:
        raise TunewrightError("the answer to explain is empty", field="target")
    answer = torch.tensor(answer_ids)
    if method == "ablation":
        seq_attr, token_attr, tokens, baseline_ids = _ablation(scorer, tokenizer, parts, answer)
    else:
        seq_attr, token_attr, tokens, baseline_ids = _gradient(scorer, tokenizer, parts, answer, n_steps)
    return Explanation(
        method=method, segments=parts, answer=tokenizer.decode(answer_ids, skip_special_tokens=True).strip(),
        answer_ids=answer_ids, answer_tokens=list(tokens), seq_attr=seq_attr.detach().float().cpu(),
        token_attr=token_attr.detach().float().cpu(), answer_logprobs=_token_logprobs(scorer, prompt_ids, answer),
        baseline_logprobs=None if baseline_ids is None else _token_logprobs(scorer, baseline_ids, answer),
        seconds=time.perf_counter() - started,
    )


def check_method(method: str) -> None:
    if method not in METHODS:
        raise TunewrightError(f"unknown explanation method '{method}' (use one of: {', '.join(METHODS)})",
                              field="method")


# -- workspace level ----------------------------------------------------------------------------


def _slug(prompt: str, system: str | None, method: str) -> str:
    from ..io import sha256_text

    words = re.findall(r"[a-z0-9]+", prompt.lower())[:6]
    return "-".join([*words, method, sha256_text(f"{system}\x00{prompt}")[:8]])


def explain(workspace, prompt: str, adapter: str | None = None, *, method: str = "ablation", max_new_tokens: int = 48,
            system: str | None = None, n_steps: int = IG_STEPS) -> dict[str, Any]:
    """Base and tuned each explain their own answer to ``prompt``; writes explain/<slug>.{html,json}
    under the adapter's reports and records the report in the registry."""
    from ..io import ensure_writable_dir, sha256_text
    from ..models import load_model, load_tokenizer
    from ..methods.attach import load_adapter
    from ..models.adapters import BASE_REF, resolve_ref
    from ..registry.reports import ReportStore
    from .explain_render import adapter_changes, write_report

    check_method(method)
    if not prompt.strip():
        raise TunewrightError("the prompt is empty", field="prompt")
    if max_new_tokens < 1:
        raise TunewrightError("max_new_tokens must be at least 1", field="max_new_tokens")
    adapter = adapter or workspace.recipe.train.adapter or workspace.recipe.name
    if adapter == BASE_REF:
        raise TunewrightError("explain compares the base model with an adapter; name an adapter", field="adapter")
    resolved = resolve_ref(adapter, base_model=workspace.recipe.base_model, registry=workspace.registry)
    name = adapter if resolved.adapter_id is not None else Path(adapter).name
    out_dir = ensure_writable_dir(workspace.dir("reports") / name / "explain")

    from ..retrieval.context import retriever_for

    retriever = retriever_for(workspace, resolved.adapter_path)
    if retriever is not None:  # an open-book adapter answers with its records: they join the system segment
        head = [{"role": "system", "content": system}] if system else []
        system = retriever.augment([*head, {"role": "user", "content": prompt}])[0]["content"]

    started = time.perf_counter()
    tokenizer = load_tokenizer(resolved.base, padding_side="left")
    base_model = load_model(resolved.base)
    # A second copy for the adapter, as merging changes the weights of the model it is loaded onto
    # (copying the loaded weights is quicker than reading them again).
    attached = load_adapter(copy.deepcopy(base_model), resolved.adapter_path)
    load_seconds = time.perf_counter() - started

    base = explain_answer(base_model, tokenizer, prompt, method=method, system=system,
                          max_new_tokens=max_new_tokens, n_steps=n_steps)
    system_text = next((s.text for s in base.segments if s.role == SYSTEM), "")
    pieces = [s.text for s in base.segments if s.role == USER]
    same = dict(method=method, segments=pieces, system=system_text, max_new_tokens=max_new_tokens, n_steps=n_steps)
    try:
        tuned = explain_answer(attached.model, tokenizer, "".join(pieces), **same)
    except TunewrightError as exc:
        raise TunewrightError(f"{attached.peft_type} adapter '{adapter}': {exc.message}", field=exc.field) from None
    # How surprising the base finds the tuned answer, and what in the prompt it would credit for it;
    # only for ablation, where it costs a few forward passes rather than a second gradient run.
    cross = None
    if method == "ablation" and tuned.answer_ids != base.answer_ids:
        cross = explain_answer(base_model, tokenizer, "".join(pieces), target=tuned.answer_ids, **same)

    segments = [{"text": s.text, "role": s.role, "label": s.label} for s in base.segments]
    titles = {"base": f"base ({resolved.base.ref})", "tuned": f"tuned ({adapter})",
              "cross": "base model scoring the tuned answer"}
    models = [{"key": key, "title": titles[key], **exp.to_json()} for key, exp in (("base", base), ("tuned", tuned))]
    report = {
        "kind": "explain", "adapter": adapter, "adapter_id": resolved.adapter_id, "peft_type": attached.peft_type,
        "merged": attached.merged, "base_model": resolved.base.ref, "method": method, "prompt": prompt,
        "system": system, "prompt_sha256": sha256_text(prompt), "max_new_tokens": max_new_tokens,
        "n_steps": n_steps if method == "gradient" else None, "segments": segments, "models": models,
        "cross": {"key": "cross", "title": titles["cross"], **cross.to_json()} if cross else None,
        "changes": adapter_changes([s["label"] for s in segments], models[0], models[1]),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    report["seconds"] = {"load": round(load_seconds, 3), "base": round(base.seconds, 3),
                         "tuned": round(tuned.seconds, 3), "cross": round(cross.seconds, 3) if cross else None,
                         "total": round(time.perf_counter() - started, 3)}
    # A timestamped name: a registered report's file must keep the bytes its hash pinned.
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    json_path, html_path = write_report(out_dir, f"{_slug(prompt, system, method)}-{stamp}", report)
    summary = {"prompt_sha256": report["prompt_sha256"], "method": method,
               "top_segment": {m["key"]: m["top"][0]["segment"].strip() for m in models},
               "answers_differ": tuned.answer_ids != base.answer_ids}
    record = ReportStore(workspace.registry).add_report("explain", html_path, summary, adapter_id=resolved.adapter_id)
    return {**report, "report_id": record.id, "paths": {"html": str(html_path), "json": str(json_path)}}
