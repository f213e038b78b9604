"""Top-level commands: init, train, eval, generate, run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from ..reports import EvalReport
from .context import console, open_workspace, workspace_dir


def _init(
    directory: Optional[Path] = typer.Argument(None, help="Folder for the workspace (default: --workspace or .)."),
    name: Optional[str] = typer.Option(None, help="Project name (default: the folder's name)."),
    base_model: Optional[str] = typer.Option(None, help="Base model: a known name, a local HF folder or a .gguf file."),
    from_example: Optional[Path] = typer.Option(None, "--from", help="Copy a recipe folder (tunewright.yaml and its files)."),
    force: bool = typer.Option(False, help="Overwrite an existing recipe."),
) -> None:
    """Create a workspace: the recipe, the registry and its folders."""
    from ..workspace import init_workspace

    workspace = init_workspace(directory or workspace_dir(), name=name, base_model=base_model, template=from_example, force=force)
    console.print(f"workspace ready: {workspace.root} (recipe {workspace.recipe_path.name}, registry {workspace.registry_url})")


def _train(
    adapter: Optional[str] = typer.Option(None, help="Adapter name (default: recipe train.adapter)."),
    dataset: Optional[str] = typer.Option(None, help="Dataset name[@version] (default: the recipe's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the last unfinished run from its checkpoint."),
    epochs: Optional[float] = typer.Option(None, help="Override train.epochs."),
    max_steps: Optional[int] = typer.Option(None, help="Override train.max_steps."),
    distributed: str = typer.Option(
        "none", help="none | ddp (data parallel: CPU processes or GPUs) | fsdp | zero3 (shard the model over CUDA GPUs)."),
    nproc: int = typer.Option(1, help="Worker processes per machine: one per GPU (on a CPU they share its cores)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write the launch config and print the launch command; train nothing."),
    num_machines: int = typer.Option(1, help="Machines taking part (multi-node)."),
    machine_rank: int = typer.Option(0, help="This machine's rank; 0 creates and registers the run."),
    main_process_ip: Optional[str] = typer.Option(None, help="Address of machine 0 (multi-node)."),
    main_process_port: Optional[int] = typer.Option(None, help="Port on machine 0 (multi-node; default 29500)."),
    allow_pii: Optional[str] = typer.Option(
        None, "--allow-pii", help="Train despite unresolved PII findings in the dataset; the reason is audited."),
) -> None:
    """Train an adapter with the recipe's PEFT method on the train split and register it."""
    from ..train.api import plan_launch, train
    from ..train.launch import LaunchOptions
    from .progress import training_progress

    overrides = {k: v for k, v in {"epochs": epochs, "max_steps": max_steps}.items() if v is not None}
    launch = LaunchOptions(mode=distributed.lower(), nproc=nproc, num_machines=num_machines, machine_rank=machine_rank,
                           main_process_ip=main_process_ip, main_process_port=main_process_port, dry_run=dry_run)
    launch.validate()  # a bad option fails before the workspace, data and model are loaded
    workspace = open_workspace()
    if dry_run:
        plan = plan_launch(workspace, launch=launch, dataset=dataset, overrides=overrides)
        if plan.config_file is not None:
            console.print(f"accelerate config: {plan.config_file}")
        console.print(f"job: {plan.job_file}\nlaunch command:\n{plan.describe()}", soft_wrap=True, highlight=False)
        return
    with training_progress("training") as on_step:
        run, record, result = train(workspace, adapter=adapter, dataset=dataset, resume=resume, callbacks=[on_step],
                                    overrides=overrides, launch=launch, allow_pii=allow_pii)
    console.print(
        f"adapter [bold]{record.name}[/bold] v{record.version} saved to {record.path}\n"
        f"run {run.id}: {result.steps} steps, final loss {result.losses[-1]:.3f}, "
        f"{result.tokens_per_second:.0f} tokens/s, {result.train_seconds:.0f} s"
    )


def print_report(report: EvalReport) -> None:
    from ..evaluate.metrics import get_metric

    table = Table(title=f"{report['adapter']} on {report['dataset']['name']} ({report['split']}, {report['n_examples']} examples)")
    for column in ("metric", "base", "tuned", "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, before in report["before"]["metrics"].items():
        after = report["after"]["metrics"][name]
        style = "green" if after > before else ("red" if after < before else "default")
        table.add_row(get_metric(name).label, f"{before:.1%}", f"{after:.1%}", f"[{style}]{(after - before) * 100:+.1f} pts[/]")
    console.print(table)
    forgetting = report.get("forgetting")
    if forgetting:
        if forgetting["retention"] is None:
            kept = f"retention n/a (the base answered none of {forgetting['n_retention_probes']} probes)"
        else:
            style = "green" if forgetting["n_tuned_kept"] == forgetting["n_base_correct"] else "red"
            kept = (f"retention [{style}]{forgetting['retention']:.1%}[/] ({forgetting['n_tuned_kept']} of "
                    f"{forgetting['n_base_correct']} base-correct probes)")
        console.print(f"forgetting: KL {forgetting['kl']:.3f} nats/token over {forgetting['n_general_prompts']} "
                      f"general prompts; {kept}")
    if report.get("by_kind"):
        print_kinds(report)
    if report.get("questions"):
        print_questions(report["questions"])
    console.print(f"report: {report['paths']['html']}")


def print_kinds(report: EvalReport) -> None:
    """The held-out rows per meta.kind: each metric, base -> tuned."""
    from ..evaluate.metrics import get_metric

    metrics = list(report["before"]["metrics"])
    table = Table(title="held-out rows by kind (base -> tuned)")
    for column in ("kind", "rows", *(get_metric(m).label for m in metrics)):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind, scores in report["by_kind"].items():
        cells = []
        for metric in metrics:
            before, after = scores["base"][metric], scores["tuned"][metric]
            style = "green" if after > before else ("red" if after < before else "default")
            cells.append(f"{before:.1%} -> [{style}]{after:.1%}[/]")
        table.add_row(kind, str(scores["n"]), *cells)
    console.print(table)


def print_questions(asked: dict) -> None:
    def cell(tally: dict) -> str:
        return f"{tally['accuracy']:.1%} ({tally['correct']}/{tally['n']})"

    base, tuned = asked["base"], asked["tuned"]
    table = Table(title=f"customer questions ({asked['file']}, {asked['n']} questions)")
    for column in ("kind", "base", "tuned", "change"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    kinds = [(kind, base["by_kind"][kind], tuned["by_kind"][kind]) for kind in tuned["by_kind"]]
    for kind, before, after in kinds + [("all", base, tuned)]:
        change = after["correct"] - before["correct"]
        style = "green" if change > 0 else ("red" if change < 0 else "default")
        table.add_row(f"[bold]{kind}[/]" if kind == "all" and kinds else kind, cell(before), cell(after),
                      f"[{style}]{change:+d}[/]")
    console.print(table)


def _eval(
    adapter: Optional[str] = typer.Option(None, help="Adapter to compare with the base model."),
    dataset: Optional[str] = typer.Option(None, help="Dataset name[@version]."),
    split: Optional[str] = typer.Option(None, help="eval or train."),
    limit: Optional[int] = typer.Option(None, help="Only the first N examples."),
    questions: Optional[Path] = typer.Option(
        None, "--questions", metavar="FILE",
        help="Customer questions (JSONL: question, accept, kind) to ask both models; overrides eval.questions."),
    show: int = typer.Option(5, help="Print this many per-example differences."),
) -> None:
    """Evaluate base vs tuned on held-out rows; store results and write report.html / report.json."""
    from ..evaluate.api import evaluate
    from .progress import count_progress

    workspace = open_workspace()
    with count_progress("generating") as (on_phase, on_batch):
        report = evaluate(workspace, adapter=adapter, dataset=dataset, split=split, limit=limit, questions=questions,
                          on_batch=on_batch, on_phase=on_phase)
    print_report(report)
    if show:
        console.print(example_table(report["examples"][:show]))


def example_table(examples) -> Table:
    # Cells are Text, not markup: rows and answers are data, and aligned media rows hold
    # "[/image text]", which Rich would read as a closing tag and refuse.
    diff = Table(title="per-example differences", show_lines=True)
    for column in ("question", "expected", "base", "tuned"):
        diff.add_column(column, overflow="fold")
    for example in examples:
        diff.add_row(*(Text(str(example[key])) for key in ("question", "expected", "base_response", "tuned_response")))
    return diff


def _generate(
    model: str = typer.Option(..., help="'base', a registered adapter name, or an adapter folder."),
    input: Path = typer.Option(..., "--input", "-i", help="JSONL rows with 'messages' or 'prompt'."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL: each input row plus 'response'."),
    max_new_tokens: Optional[int] = typer.Option(None, help="Default: recipe eval.max_new_tokens."),
    batch_size: Optional[int] = typer.Option(None, help="Default: recipe eval.batch_size."),
) -> None:
    """Batch inference over a JSONL file."""
    from ..serve.batch import generate_file
    from .progress import count_progress

    workspace = open_workspace()
    with count_progress("generating") as (on_phase, on_batch):
        count = generate_file(workspace, model_ref=model, input_path=input, output_path=output,
                              max_new_tokens=max_new_tokens, batch_size=batch_size, on_batch=on_batch, on_phase=on_phase)
    console.print(f"wrote {count} responses to {output}")


def _run() -> None:
    """The whole recipe: build (or import) the dataset, train, evaluate, report."""
    from ..strategies import RunProgress, result_row, run_recipe, strategy_of
    from .compare import print_strategy_rows
    from .data import print_dataset
    from .progress import count_progress, training_progress

    class Bars(RunProgress):
        def dataset(self, record) -> None:
            print_dataset(record)

        def training(self):
            return training_progress("training")

        def evaluating(self):
            return count_progress("evaluating")

    workspace = open_workspace()
    done = run_recipe(workspace, Bars())
    result, adapter = done.result, done.adapter
    console.print(f"adapter {adapter.name} v{adapter.version}: {result.steps} steps, {result.tokens_per_second:.0f} tokens/s, {result.train_seconds:.0f} s")
    print_report(done.report)
    # Where the minutes went: the training stage also answers the replay prompts and plans.
    t = done.seconds
    console.print(f"time: dataset {t['dataset']:.0f} s, training {t['train']:.0f} s (the loop {result.train_seconds:.0f} s), "
                  f"evaluation {t['eval']:.0f} s, total {t['total']:.0f} s")
    if done.report.get("questions"):
        # The recipe's row of `tunewright compare --strategies`, so runs compare with that table.
        strategy = strategy_of(workspace.recipe)
        print_strategy_rows([result_row(strategy, done.dataset, result, done.report)], f"strategy {strategy} (this run)")


def register(app: typer.Typer) -> None:
    app.command("init")(_init)
    app.command("train")(_train)
    app.command("eval")(_eval)
    app.command("generate")(_generate)
    app.command("run")(_run)
