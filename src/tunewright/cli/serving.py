"""`tunewright serve`, `tunewright drift` and `tunewright registry alias ...`."""

from __future__ import annotations

from datetime import datetime
from typing import List, Optional

import typer
from rich.table import Table

from .context import console, err_console, open_workspace

alias_app = typer.Typer(no_args_is_help=True, help="Deployment aliases (production, staging): set, promote, split, roll back.")


def serve(
    host: Optional[str] = typer.Option(None, help="Address to listen on (recipe: serve.host)."),
    port: Optional[int] = typer.Option(None, help="Port (recipe: serve.port)."),
    adapter: Optional[List[str]] = typer.Option(
        None, "--adapter", "-a", help="Adapter to load (registered name, name@version or folder); repeatable. "
                                      "Default: every registered adapter."),
    log_requests: Optional[bool] = typer.Option(None, "--log-requests/--no-log-requests",
                                                help="Write requests and answers, PII redacted, to logs/requests/."),
    insecure: bool = typer.Option(False, "--insecure",
                                  help="Serve without inference keys on a non-loopback host (recipe: serve.insecure)."),
    allowed_host: Optional[List[str]] = typer.Option(
        None, "--allowed-host", help="Host header value clients use, name or name:port; repeatable "
                                     "(recipe: serve.allowed_hosts). Default: localhost and the bound host."),
) -> None:
    """Serve the base model and adapters behind an OpenAI-compatible API (/v1/chat/completions, ...)."""
    import uvicorn

    from ..serve.app import create_app
    from ..serve.guards import WILDCARD_HOSTS
    from ..serve.server import build_state

    workspace = open_workspace()
    updates = {k: v for k, v in {"host": host, "port": port, "adapters": adapter or None, "log_requests": log_requests,
                                 "insecure": insecure or None, "allowed_hosts": allowed_host or None}.items()
               if v is not None}
    spec = workspace.recipe.serve.model_copy(update=updates)
    state = build_state(workspace, spec)  # refuses a keyless API on a non-loopback host before loading
    table = Table("model", "method", "batches", "source")
    for served in state.pool.models.values():
        table.add_row(served.name, served.peft_type.lower(), "mixed" if served.lane.shared else "own lane", served.source)
    console.print(table)
    if not state.inference_keys:
        err_console.print(f"{'warning' if spec.insecure else 'note'}: no inference keys set ({spec.api_keys_env}); "
                          f"anyone who can reach {spec.host}:{spec.port} can use the API")
    if spec.allowed_hosts is None and spec.host in WILDCARD_HOSTS:
        err_console.print("note: only requests addressed to localhost, 127.0.0.1 or [::1] are answered; list the "
                          "names clients use with --allowed-host (serve.allowed_hosts)")
    console.print(f"OpenAI-compatible API on http://{spec.host}:{spec.port}/v1  (metrics: /metrics)")
    # On SIGTERM or Ctrl+C uvicorn stops accepting connections and lets open requests finish.
    uvicorn.run(create_app(state), host=spec.host, port=spec.port, log_level="warning",
                timeout_graceful_shutdown=int(spec.request_timeout_s) + 5)


def drift(
    dataset: Optional[str] = typer.Option(None, help="Training dataset to compare with (default: the recipe's)."),
    since: Optional[datetime] = typer.Option(None, help="Only requests at or after this time (ISO 8601)."),
) -> None:
    """How live requests differ from the training data: topics, unseen inputs, lengths."""
    from ..serve.drift import drift_for_workspace

    report, json_path, html_path = drift_for_workspace(open_workspace(), dataset=dataset, since=since)
    console.print(report["message"])
    for reason in (report.get("verdict") or {}).get("reasons", []):
        console.print(f"  - {reason}")
    console.print(f"report: {html_path}\ndata: {json_path}")


def _show(state) -> str:
    if state is None or state.adapter is None:
        return "(not set)"
    text = f"{state.adapter.name}@{state.adapter.version}"
    if state.split_adapter is not None:
        text += f", {state.split_percent}% to {state.split_adapter.name}@{state.split_adapter.version}"
    return text


def _store():
    from ..registry.deploy import DeploymentStore

    return DeploymentStore(open_workspace().registry)


@alias_app.command("show")
def alias_show() -> None:
    """What each alias serves, and its history."""
    store = _store()
    table = Table("alias", "serves", "changes", "last change")
    for alias, state in store.aliases().items():
        history = store.history(alias)
        last = f"{state.action} by {state.actor} at {str(state.created_at)[:19]}" if state else "-"
        table.add_row(alias, _show(state), str(len(history)), last)
    console.print(table)


_REASON = typer.Option(None, "--reason", help="Why: kept with the change in the audit log.")
_OVERRIDE = typer.Option(None, "--override", help="Go past failed release gates; the written reason is audited.")


def _gated():
    from ..govern.gates import GatedDeployment

    return GatedDeployment(open_workspace())


def _evidence_note(state) -> str:
    evidence = state.evidence or {}
    gates = evidence.get("gates") or {}
    parts = [f"{c['name']} {'pass' if c['passed'] else 'FAIL'}" for c in gates.get("checks", [])]
    if evidence.get("override"):
        parts.append(f"override: {evidence['override']}")
    return f" ({'; '.join(parts)})" if parts else ""


@alias_app.command("set")
def alias_set(alias: str = typer.Argument(..., help="production or staging"),
              adapter: str = typer.Argument(..., help="adapter name or name@version"),
              reason: Optional[str] = _REASON, override: Optional[str] = _OVERRIDE) -> None:
    """Point an alias at an adapter (ends any split); production must pass the recipe's release gates."""
    state = _gated().set_alias(alias, adapter, reason=reason, override=override)
    console.print(f"{alias} -> {_show(state)}{_evidence_note(state)}")


@alias_app.command("promote")
def alias_promote(source: str = typer.Argument("staging"), target: str = typer.Argument("production"),
                  reason: Optional[str] = _REASON, override: Optional[str] = _OVERRIDE) -> None:
    """The target alias serves what the source alias serves (gated when the target is production)."""
    state = _gated().promote(source, target, reason=reason, override=override)
    console.print(f"{target} -> {_show(state)}{_evidence_note(state)}")


@alias_app.command("rollback")
def alias_rollback(alias: str = typer.Argument("production"), reason: Optional[str] = _REASON) -> None:
    """Return the alias to its state before the latest change."""
    console.print(f"{alias} -> {_show(_gated().rollback(alias, reason=reason))}")


@alias_app.command("split")
def alias_split(alias: str = typer.Argument(..., help="production or staging"),
                adapter: str = typer.Argument(..., help="the second adapter (name or name@version)"),
                percent: int = typer.Option(..., "--percent", "-p", help="share of requests for it (0 ends the test)"),
                reason: Optional[str] = _REASON, override: Optional[str] = _OVERRIDE) -> None:
    """A/B test: route a share of the alias's requests to a second adapter (gated on production)."""
    state = _gated().split(alias, adapter, percent, reason=reason, override=override)
    console.print(f"{alias} -> {_show(state)}{_evidence_note(state)}")
