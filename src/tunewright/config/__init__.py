"""The typed recipe: one ``tunewright.yaml`` per workspace, validated on load."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import TunewrightError
from .align import AlignSpec
from .govern import GovernSpec
from .retrieval import RetrievalSpec
from .serve import ServeSpec
from .synth import SynthSpec

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
RECIPE_FILENAME = "tunewright.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(_Strict):
    """A file of examples to import (JSONL, CSV or Parquet), relative to the workspace."""

    path: str


class MediaLimits(_Strict):
    """Limits each imported image or audio part must meet; one over a limit is refused, naming it.

    The defaults follow what hosted multi-modal APIs accept per file, so a row that imports here
    also fits the usual providers (a 20 MB image, an 8192 px side)."""

    image_max_mb: float = Field(20.0, gt=0, description="largest image file, in MiB")
    image_max_side: int = Field(8192, gt=0, description="longest image side, in pixels")
    audio_max_mb: float = Field(30.0, gt=0, description="largest audio file, in MiB")
    audio_max_seconds: float = Field(300.0, gt=0, description="longest audio clip, in seconds")


class DataSpec(_Strict):
    sources: list[SourceSpec] = Field(default_factory=list)
    media: MediaLimits = Field(default_factory=MediaLimits)
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 0


class QuestionSet(_Strict):
    """One fact asked several ways, with its answer and the short reference an answer must contain.

    For a table column the strings are patterns whose ``{column}`` placeholders are filled per row;
    for a document they are a seed pair a person wrote, with alternative phrasings.
    """

    questions: list[str] = Field(min_length=2)
    answer: str
    reference: str | None = None
    phrasings: int | None = Field(
        None, ge=1, description="training phrasings per fact of this set, over the build's cap "
                                "(train_phrasings, group_phrasings): for a few facts asked in many ways")


class CompareSet(QuestionSet):
    """Two rows of one group compared on ``column``; ``prefer`` says which value wins the question
    ("lighter" prefers the lowest weight). Patterns see {a} and {b} (the two names as asked), the
    winner's columns as usual and the other row's columns prefixed ``other_``."""

    column: str
    prefer: Literal["lowest", "highest"]
    across_groups: int = Field(
        0, ge=0, description="also compare each row with this many rows of other groups (chosen by a seed "
                             "fixed per row): customers compare across categories too ('is the fiber plan "
                             "faster than the cable one?'); 0: within groups only")


class GroupSpec(_Strict):
    """Questions across rows: the rows sharing a value of ``by`` form a group (a category).

    Patterns see {group} (the value as in the table), {item} (how a customer names one of it, from
    ``labels``, else the value) and {names} (the members' names joined). ``lowest``/``highest`` are
    keyed by the column compared; their patterns also see the winning row's columns. Quantities
    compare by value with their unit ("480 g" < "1.2 kg").
    """

    by: str
    name: str = Field(description="the column that names a row in answers")
    labels: dict[str, str] = Field(default_factory=dict)
    members: QuestionSet | None = None
    # For each member of a group of two or more, the rest of its group ("besides the X, what other
    # boots do you have?"): patterns also see the named row's columns and {others} (the rest, joined).
    others: QuestionSet | None = None
    lowest: dict[str, QuestionSet] = Field(default_factory=dict)
    highest: dict[str, QuestionSet] = Field(default_factory=dict)
    compare: list[CompareSet] = Field(default_factory=list)
    # The same across the whole table ("the cheapest thing you sell"): patterns see the winning row's
    # columns, {group} and {item} of its group, and {names} (every row's name).
    overall_lowest: dict[str, QuestionSet] = Field(default_factory=dict)
    overall_highest: dict[str, QuestionSet] = Field(default_factory=dict)


class TableSource(_Strict):
    path: str
    columns: dict[str, QuestionSet] = Field(
        default_factory=dict, description="per column: questions asking for that column's value of a row")
    records: list[QuestionSet] = Field(
        default_factory=list,
        description="row-level facts whose patterns may use any column: the whole row as one statement, "
                    "or a reversed lookup (code -> name)")
    groups: GroupSpec | None = None

    @model_validator(mode="after")
    def _asks_something(self) -> "TableSource":
        if not (self.columns or self.records or self.groups):
            raise ValueError("a table needs columns, records or groups to ask about")
        return self


class AbsentSpec(QuestionSet):
    """Things the company does not offer, so the model learns to say so instead of inventing one.
    Patterns see {item}."""

    items: list[str] = Field(min_length=2)


class RuleSide(_Strict):
    answer: str
    reference: str | None = None


class RuleSpec(_Strict):
    """A threshold the document states, asked with the customer's own number: "I bought it 20 days
    ago, can you still price match?" needs the rule applied, not quoted. Question patterns name
    ``{n}``; each of ``values`` (numbers, or the text a customer writes mapped to its number:
    ``{"1 pm": 13}``) is one fact, answered with ``at_most`` when it is at most ``limit`` and
    ``over`` otherwise. ``quote`` is the document's words that state the rule: the build refuses a
    quote the document does not hold, and an open-book row shows the passage that holds it."""

    quote: str
    limit: float
    values: list[float] | dict[str, float] = Field(min_length=2)
    questions: list[str] = Field(min_length=2)
    at_most: RuleSide
    over: RuleSide


class DocumentSource(_Strict):
    path: str
    seeds: list[QuestionSet] = Field(min_length=1)
    rules: list[RuleSpec] = Field(default_factory=list)


class OpenBookSpec(_Strict):
    """Open-book rows (retrieval-augmented fine-tuning): every built row carries the top
    ``retrieval.k`` chunks of the workspace's index in its system message. In training rows the chunk
    holding the answer is among them with probability ``oracle_rate`` and left out otherwise (RAFT).
    With ``shuffle`` a training row's records are in random order rather than retrieval's (a
    template question retrieves its own record first, in 88% of the demo's rows, while customers'
    questions often rank it second). Off by default: the demo trained with it scored 83.3% on its
    36 customer questions and 70.3% on 37 later ones, retention 88.5%, against 86.1%, 78.4% and
    93.8% without; one run each, so within the spread of runs, but no gain to show for it."""

    oracle_rate: float = Field(0.8, ge=0.0, le=1.0)
    shuffle: bool = False
    seed: int = 0


class MentionSpec(_Strict):
    """Document questions asked with one of the table's entities in them ("I bought the X last week.
    Can I still return it?"), so a question that names a product but asks about a policy is answered
    from the policy: in open-book rows the named product's record comes along as a distractor.
    Wrappers see {q}, {q_lower} and {mention} (a value of ``column``, drawn by seed)."""

    table: str = Field(description="path of one of build.tables")
    column: str
    wrappers: list[str] = Field(min_length=1)
    per_seed: int = Field(2, ge=1, description="extra training rows per document seed")
    short_forms: bool = Field(
        False, description="also mention an entity as customers shorten its name: the last word ('tent' for "
                           "'Basecamp 4 Tent') or all but the first ('4 tent'), lower case; drawn with the full name")

    @model_validator(mode="after")
    def _wrappers_have_slots(self) -> "MentionSpec":
        for wrapper in self.wrappers:
            if "{mention}" not in wrapper or ("{q}" not in wrapper and "{q_lower}" not in wrapper):
                raise ValueError(f"wrappers: '{wrapper}' needs {{mention}} and a {{q}} or {{q_lower}} slot")
        return self


class BuildSpec(_Strict):
    """The grounded data builder: structured knowledge in, question/answer rows out."""

    dataset: str | None = None
    generator: str = "grounded-qa"
    tables: list[TableSource] = Field(default_factory=list)
    documents: list[DocumentSource] = Field(default_factory=list)
    absent: AbsentSpec | None = None
    open_book: OpenBookSpec | None = Field(
        None, description="put retrieved records in every row's prompt (needs the retrieval index of the sources)")
    eval_phrasings: int = Field(1, ge=1, description="phrasings per fact held out for the eval split")
    holdout: Literal["pattern", "fact"] = Field(
        "pattern", description="pattern: a question pattern held out is held out for every row, so the eval asks "
                               "in words no training row used; fact: each row holds out its own pattern in turn, so "
                               "every pattern trains on the other rows (more of the recipe's wordings reach the "
                               "model) and each fact is still asked in words it never trained with")
    train_phrasings: int | None = Field(None, ge=1, description="cap on training phrasings per fact")
    seed_phrasings: int | None = Field(
        None, ge=1, description="cap for document seeds (few facts, asked in many ways); unset: train_phrasings")
    group_phrasings: int | None = Field(
        None, ge=1, description="cap for facts across a table's rows (groups: members, lowest, highest, compared), "
                                "which no single record answers and the model must remember; unset: train_phrasings")
    wrappers: list[str] = Field(
        default_factory=lambda: ["{q}"],
        description="surface forms rotated over training questions: {q} is the question, {q_lower} it in lower case",
    )
    mentions: MentionSpec | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _wrappers_have_slot(self) -> "BuildSpec":
        for wrapper in self.wrappers:
            if "{q}" not in wrapper and "{q_lower}" not in wrapper:
                raise ValueError(f"wrappers: '{wrapper}' has no {{q}} or {{q_lower}} slot")
        return self


class ReplaySpec(_Strict):
    """General requests answered by the base model itself, mixed into training against forgetting.

    ``prompts``: a JSONL file in the workspace with ``{"id", "prompt"}`` rows (unset: the set shipped
    with Tunewright); it must not overlap the sets that measure forgetting."""

    rows: int = Field(48, ge=1, description="replay prompts drawn (by seed) and answered by the base model")
    prompts: str | None = None
    max_new_tokens: int = Field(
        128, ge=8, description="longer answers are cut here and trained without their end-of-turn token")
    seed: int = 0
    # kl is the default: on the demo it cut KL to the base tenfold (0.465 -> 0.044) and kept more of
    # the retention probes (85.0% -> 87.6%) at the same cost, within a question of the same accuracy.
    loss: Literal["tokens", "kl"] = Field(
        "kl", description="kl: KL to the base model's next-token distribution at every answer position (a KL "
                          "penalty to the base); tokens: cross-entropy on the base's greedy answer")
    top_k: int = Field(20, ge=1, le=1000, description="kl: the base's most likely tokens kept per position")
    weight: float = Field(1.0, gt=0, le=100, description="kl: the KL term's coefficient, per replay token "
                                                         "against 1 per task token")

    @model_validator(mode="after")
    def _weight_needs_kl(self) -> "ReplaySpec":
        if self.weight != 1.0 and self.loss != "kl":
            raise ValueError("weight is the coefficient of the KL term: set loss: kl")
        return self


class VisionSpec(_Strict):
    """Which parts of a vision-language model the adapter trains (models.vision.PARTS)."""

    targets: list[Literal["language", "connector", "vision"]] = Field(
        default_factory=lambda: ["language", "connector"], min_length=1,
        description="parts to adapt: language, connector (projector), vision (the tower; frozen unless named)")
    full: list[Literal["connector", "vision"]] = Field(
        default_factory=list, description="parts trained in full and saved whole in the adapter (a new "
                                          "projector, an encoder trained from scratch); not also in targets")

    @model_validator(mode="after")
    def _apart(self) -> "VisionSpec":
        both = sorted(set(self.targets) & set(self.full))
        if both:
            raise ValueError(f"{', '.join(both)} is in both targets (LoRA) and full (trained whole); choose one")
        return self


class TrainSpec(_Strict):
    dataset: str | None = None
    adapter: str | None = None
    method: str = "lora"
    method_settings: dict[str, Any] = Field(
        default_factory=dict, description="the method's own typed settings (see `tunewright train --help-methods`)")
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    learning_rate: float = Field(1e-3, gt=0)
    epochs: float = Field(3, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(512, ge=16)
    seed: int = 0
    checkpoint_every: int = Field(50, ge=1)
    share_prefix: bool = Field(True, description="run the prefix all rows share (system prompt) once per batch")
    packing: Literal["auto", "on", "off"] = Field(
        "auto", description="pack each batch after its shared prefix into one sequence; auto: while attention stays cheap")
    fuse_lora: bool = Field(True, description="run LoRA layers that share an input (q/k/v, gate/up) as one matrix multiply")
    threads: int | None = Field(None, ge=1)
    gradient_checkpointing: bool | None = Field(None, description="None: on only when the memory plan needs it")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: what this hardware measurably runs fastest (fp32 on a CPU without bf16)")
    replay: ReplaySpec | None = Field(None, description="mix in the base model's own answers to general requests")
    neftune_alpha: float | None = Field(
        None, gt=0, description="NEFTune: uniform noise of scale alpha/sqrt(length*hidden) on the input embeddings "
                                "while training (arXiv 2310.05914; the paper uses 5-15); None: off")
    vision: VisionSpec | None = Field(None, description="vision-language models: which parts train (default language, connector)")


class EvalSpec(_Strict):
    dataset: str | None = None
    split: Literal["eval", "train"] = "eval"
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1)
    metrics: list[str] = Field(default_factory=lambda: ["exact_match", "contains", "token_f1"])
    limit: int | None = Field(None, ge=1, description="ask this many held-out rows, spread evenly over the split")
    questions: str | None = Field(
        None, description="JSONL of independently written customer questions with accepted answers, relative to the "
                          "workspace; asked of base and tuned, never trained on")


class RegistrySpec(_Strict):
    url: str | None = Field(None, description="SQLAlchemy URL; default is registry.db in the workspace")


class Recipe(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    base_model: str = DEFAULT_BASE_MODEL
    registry: RegistrySpec = Field(default_factory=RegistrySpec)
    data: DataSpec = Field(default_factory=DataSpec)
    build: BuildSpec | None = None
    synth: SynthSpec | None = None
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    serve: ServeSpec = Field(default_factory=ServeSpec)
    govern: GovernSpec = Field(default_factory=GovernSpec)
    retrieval: RetrievalSpec = Field(default_factory=RetrievalSpec)
    align: AlignSpec | None = Field(
        None, description="OCR and transcription of image and audio parts for `data align`; unset: engine defaults")

    @property
    def dataset_name(self) -> str:
        return (self.build.dataset if self.build and self.build.dataset else None) or self.name

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Follow a pydantic error location through the YAML node tree to a 1-based line number."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == key), None)
            if match is None:
                key_node = next((k for k, _ in node.value if k.value == key), None)
                return key_node.start_mark.line + 1 if key_node else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise TunewrightError("recipe file not found", file=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TunewrightError(f"not valid UTF-8 (byte {exc.start})", file=path) from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise TunewrightError(
            f"invalid YAML: {getattr(exc, 'problem', exc)}", file=path, line=mark.line + 1 if mark else None
        ) from None
    if not isinstance(data, dict):
        raise TunewrightError("recipe must be a mapping of settings", file=path, line=1)
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or None
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        raise TunewrightError(message, file=path, line=_line_of(node, loc), field=field) from None
