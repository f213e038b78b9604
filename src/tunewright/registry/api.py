"""The Registry: every write is one transaction that also appends its audit event."""

from __future__ import annotations

import logging
import random
import re
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import create_engine, event, func, or_, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..errors import NotFoundError, TunewrightError
from . import tables as t
from .events import (AdapterRegistered, DatasetImported, Event, EventRecord, EvaluationRecorded, IndexBuilt,
                     RunFinished, RunResumed, RunStarted, append_event, canonical_sha256, jsonable, to_record,
                     verify_chain)
from .tables import AdapterRecord, DatasetRecord, EvaluationRecord, IndexRecord, RunRecord, snapshot

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
RUN_STATUSES = ("running", "completed", "failed")
_WRITE_ATTEMPTS = 3
# SQLite's own busy handler polls with growing sleeps, so under steady contention one process can
# lose every poll until the timeout; a few retries of the whole transaction, spaced apart with
# jitter, let it win eventually instead of failing the CLI, the server or the review UI.
_SQLITE_BUSY_TIMEOUT_MS = 10_000
_BUSY_RETRIES = 5
_BUSY_BACKOFF_S = 0.05
_BUSY_BACKOFF_MAX_S = 2.0
_sleep = time.sleep  # module-level so tests can run the backoff without waiting
log = logging.getLogger(__name__)
T = TypeVar("T")


def redact_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # unparsable: still never echo something that looks like a password
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def _known(names: list[str]) -> str:
    return ", ".join(names) if names else "(none)"


class Registry:
    def __init__(self, url: str) -> None:
        self.url = str(url)
        self.display_url = redact_url(self.url)
        try:
            parsed = make_url(self.url)
            if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
                    and not parsed.database.startswith("file:"):
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(parsed)
        except (ArgumentError, ImportError, ValueError) as exc:
            raise TunewrightError(f"invalid registry URL '{self.display_url}': {exc}") from None
        except OSError as exc:
            raise TunewrightError(f"cannot create registry folder for '{self.display_url}': {exc.strerror or exc}") from None
        if self.engine.dialect.name == "sqlite":
            _configure_sqlite(self.engine)
        # Reads and writes get separate option-engines so SQLite writers can take the lock up front.
        self._reader = self.engine
        self._writer = self.engine.execution_options(tunewright_write=True)
        self._migrate()

    def __repr__(self) -> str:
        return f"Registry({self.display_url!r})"

    def close(self) -> None:
        self.engine.dispose()

    def _migrate(self) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))  # configparser interpolation

        def upgrade() -> None:
            with self._writer.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        try:
            # Processes that open one new registry file together all reach this point at once.
            self._retry_busy(upgrade)
        except CommandError as exc:
            self.engine.dispose()
            raise TunewrightError(f"cannot migrate registry '{self.display_url}': {exc} "
                                  "(was it written by a newer tunewright?)") from None
        except SQLAlchemyError as exc:
            self.engine.dispose()
            detail = getattr(exc, "orig", None) or exc
            raise TunewrightError(f"cannot open registry '{self.display_url}': {detail}") from None

    # -- transactions --------------------------------------------------------------------------

    def _read(self, work: Callable[[Session], T]) -> T:
        def attempt() -> T:
            with Session(self._reader) as session, session.begin():
                return work(session)
        return self._retry_busy(attempt)

    def _write(self, work: Callable[[Session], T]) -> T:
        # A unique-constraint conflict means a concurrent writer won the race (same event tail,
        # adapter version or dataset version); redoing the whole transaction on fresh state is safe.
        # ``work`` only touches the session, so rerunning it after a rollback repeats nothing.
        def attempt() -> T:
            with Session(self._writer, expire_on_commit=False) as session, session.begin():
                return work(session)
        for conflict in range(_WRITE_ATTEMPTS):
            try:
                return self._retry_busy(attempt)
            except IntegrityError:
                if conflict == _WRITE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _retry_busy(self, attempt: Callable[[], T]) -> T:
        """Run one whole transaction, again after a pause while SQLite says another process holds
        the lock. SQLite answers "busy" before anything commits (a busy COMMIT leaves the
        transaction open, and it is rolled back here), so the retry never doubles a write."""
        if self.engine.dialect.name != "sqlite":
            return attempt()
        for retry in range(_BUSY_RETRIES + 1):
            try:
                return attempt()
            except OperationalError as exc:
                if retry == _BUSY_RETRIES or not _sqlite_busy(exc):
                    raise
            delay = min(_BUSY_BACKOFF_S * 2**retry, _BUSY_BACKOFF_MAX_S) * random.uniform(0.5, 1.0)
            log.info("registry %s is locked by another process; retry %d in %.2f s",
                     self.display_url, retry + 1, delay)
            _sleep(delay)
        raise AssertionError("unreachable")

    # Stage packages (the review store) extend the registry through these, keeping one transaction
    # discipline and one event chain.
    def read(self, work: Callable[[Session], T]) -> T:
        return self._read(work)

    def write(self, work: Callable[[Session], T]) -> T:
        return self._write(work)

    def link(self, session: Session, parent: tuple[str, Any], child: tuple[str, Any], relation: str) -> None:
        self._link(session, parent, child, relation)

    @staticmethod
    def _require(session: Session, model: type, row_id: int | None, kind: str) -> None:
        if row_id is not None and session.get(model, row_id) is None:
            raise NotFoundError(f"{kind} id {row_id} not found")

    @staticmethod
    def _link(session: Session, parent: tuple[str, Any], child: tuple[str, Any], relation: str) -> None:
        session.add(t.Lineage(parent_kind=parent[0], parent_id=str(parent[1]), child_kind=child[0],
                              child_id=str(child[1]), relation=relation, created_at=t.utcnow()))

    # -- events --------------------------------------------------------------------------------

    def record(self, event: Event, *, actor: str | None = None) -> EventRecord:
        return self._write(lambda s: append_event(s, event, actor))

    def events(self, limit: int | None = None) -> list[EventRecord]:
        """Oldest first; with ``limit``, only the most recent ``limit`` events (still oldest first)."""
        def work(s: Session) -> list[EventRecord]:
            query = select(t.Event).order_by(t.Event.id.desc())
            if limit is not None:
                query = query.limit(limit)
            return [to_record(row) for row in reversed(s.scalars(query).all())]
        return self._read(work)

    def verify_events(self) -> tuple[bool, int | None]:
        return self._read(verify_chain)

    def lineage(self, kind: str, id: str | int) -> list[dict[str, Any]]:
        node_id = str(id)
        query = select(t.Lineage).where(or_(
            (t.Lineage.parent_kind == kind) & (t.Lineage.parent_id == node_id),
            (t.Lineage.child_kind == kind) & (t.Lineage.child_id == node_id),
        )).order_by(t.Lineage.id)
        columns = ("id", "parent_kind", "parent_id", "child_kind", "child_id", "relation", "created_at")
        return self._read(lambda s: [{c: getattr(e, c) for c in columns} for e in s.scalars(query)])

    # -- datasets ------------------------------------------------------------------------------

    def add_dataset(self, *, name: str, version: str, content_sha256: str, path: str, n_train: int, n_eval: int,
                    n_duplicates: int, source_files: list[dict[str, Any]], spec: dict[str, Any],
                    parents: list[tuple[str, Any, str]] = (), actor: str | None = None) -> DatasetRecord:
        """``parents``: extra lineage edges into the dataset as (kind, id, relation), e.g. the
        synthetic rounds and review queue a reviewed dataset came from."""
        def work(s: Session) -> DatasetRecord:
            existing = s.scalar(select(t.Dataset).where(t.Dataset.name == name, t.Dataset.version == version))
            if existing is not None:
                if existing.content_sha256 != content_sha256:
                    raise TunewrightError(f"dataset '{name}' version '{version}' is already registered "
                                          f"with different content ({existing.content_sha256})")
                return snapshot(DatasetRecord, existing)  # re-importing identical data is a no-op
            row = t.Dataset(name=name, version=version, content_sha256=content_sha256, path=str(path),
                            n_train=n_train, n_eval=n_eval, n_duplicates=n_duplicates,
                            source_files=jsonable(source_files), spec=jsonable(spec), created_at=t.utcnow())
            s.add(row)
            s.flush()
            source_shas = list(dict.fromkeys(f["sha256"] for f in source_files))  # same file twice: one edge
            for sha in source_shas:
                self._link(s, ("file", sha), ("dataset", row.id), "source_of")
            for kind, parent_id, relation in parents:
                self._link(s, (kind, parent_id), ("dataset", row.id), relation)
            append_event(s, DatasetImported(
                dataset_id=row.id, name=name, version=version, content_sha256=content_sha256, n_train=n_train,
                n_eval=n_eval, n_duplicates=n_duplicates, source_sha256=source_shas), actor)
            return snapshot(DatasetRecord, row)
        return self._write(work)

    def get_dataset(self, name: str, version: str | None = None) -> DatasetRecord:
        def work(s: Session) -> DatasetRecord:
            query = select(t.Dataset).where(t.Dataset.name == name).order_by(t.Dataset.id.desc())
            if version is not None:
                query = query.where(t.Dataset.version == version)
            row = s.scalars(query.limit(1)).first()
            if row is not None:
                return snapshot(DatasetRecord, row)
            if version is not None:
                versions = list(s.scalars(select(t.Dataset.version).where(t.Dataset.name == name).order_by(t.Dataset.id)))
                if versions:
                    raise NotFoundError(f"dataset '{name}' version '{version}' not found; known versions: "
                                        f"{_known(versions)}")
            names = list(s.scalars(select(t.Dataset.name).distinct().order_by(t.Dataset.name)))
            raise NotFoundError(f"dataset '{name}' not found; known: {_known(names)}")
        return self._read(work)

    def list_datasets(self) -> list[DatasetRecord]:
        return self._read(lambda s: [snapshot(DatasetRecord, r)
                                     for r in s.scalars(select(t.Dataset).order_by(t.Dataset.id))])

    # -- runs ----------------------------------------------------------------------------------

    def start_run(self, *, name: str, kind: str, config: dict[str, Any], seed: int, hardware: dict[str, Any],
                  library_versions: dict[str, Any], dataset_id: int | None, base_model_ref: str,
                  base_model_sha256: str | None, output_path: str, actor: str | None = None) -> RunRecord:
        def work(s: Session) -> RunRecord:
            self._require(s, t.Dataset, dataset_id, "dataset")
            row = t.Run(name=name, kind=kind, status="running", config=jsonable(config), seed=seed,
                        hardware=jsonable(hardware), library_versions=jsonable(library_versions), metrics={},
                        dataset_id=dataset_id, base_model_ref=base_model_ref, base_model_sha256=base_model_sha256,
                        output_path=str(output_path), started_at=t.utcnow())
            s.add(row)
            s.flush()
            if dataset_id is not None:
                self._link(s, ("dataset", dataset_id), ("run", row.id), "input_to")
            self._link(s, ("base_model", base_model_sha256 or base_model_ref), ("run", row.id), "input_to")
            config_sha = canonical_sha256(row.config)
            append_event(s, RunStarted(
                run_id=row.id, name=name, kind=kind, seed=seed, dataset_id=dataset_id, base_model_ref=base_model_ref,
                base_model_sha256=base_model_sha256, config_sha256=config_sha), actor)
            return snapshot(RunRecord, row)
        return self._write(work)

    def finish_run(self, run_id: int, *, status: str, metrics: dict[str, Any] | None = None,
                   error: str | None = None, actor: str | None = None) -> RunRecord:
        if status not in RUN_STATUSES[1:]:
            raise TunewrightError(f"cannot finish run {run_id} with status '{status}'; "
                                  f"use one of: {', '.join(RUN_STATUSES[1:])}")
        return self._write(lambda s: snapshot(RunRecord, self._finish(s, run_id, status, metrics, error, actor)))

    def complete_training(self, run_id: int, *, metrics: dict[str, Any], adapter: dict[str, Any],
                          actor: str | None = None) -> tuple[RunRecord, AdapterRecord]:
        """Mark a training run completed and register its adapter in one transaction, so a process
        killed in between cannot leave a completed run without its adapter (not resumable, not served).
        ``adapter`` holds :meth:`add_adapter`'s keyword arguments except ``run_id``."""
        def work(s: Session) -> tuple[RunRecord, AdapterRecord]:
            run = self._finish(s, run_id, "completed", metrics, None, actor)
            record = self._add_adapter(s, run_id=run_id, actor=actor, **adapter)
            return snapshot(RunRecord, run), record
        return self._write(work)

    def _finish(self, s: Session, run_id: int, status: str, metrics, error, actor):
        row = s.get(t.Run, run_id)
        if row is None:
            raise NotFoundError(f"run {run_id} not found")
        if row.status != "running":
            raise TunewrightError(f"run {run_id} already finished ({row.status})")
        row.status, row.metrics, row.error = status, jsonable(metrics or {}), error
        row.finished_at = t.utcnow()
        append_event(s, RunFinished(run_id=run_id, status=status, metrics=row.metrics, error=error), actor)
        return row

    def resume_run(self, run_id: int, *, actor: str | None = None) -> RunRecord:
        """Mark an interrupted (failed) run as running again; a completed run stays final."""
        def work(s: Session) -> RunRecord:
            row = s.get(t.Run, run_id)
            if row is None:
                raise NotFoundError(f"run {run_id} not found")
            if row.status == "completed":
                raise TunewrightError(f"run {run_id} already completed; start a new run instead")
            previous = row.status
            row.status, row.error, row.finished_at = "running", None, None
            append_event(s, RunResumed(run_id=run_id, from_status=previous), actor)
            return snapshot(RunRecord, row)
        return self._write(work)

    def get_run(self, run_id: int) -> RunRecord:
        def work(s: Session) -> RunRecord:
            row = s.get(t.Run, run_id)
            if row is None:
                raise NotFoundError(f"run {run_id} not found")
            return snapshot(RunRecord, row)
        return self._read(work)

    def list_runs(self) -> list[RunRecord]:
        return self._read(lambda s: [snapshot(RunRecord, r) for r in s.scalars(select(t.Run).order_by(t.Run.id))])

    # -- adapters ------------------------------------------------------------------------------

    def add_adapter(self, *, name: str, path: str, weights_sha256: str, method: str, run_id: int | None,
                    base_model_ref: str, base_model_sha256: str | None, actor: str | None = None) -> AdapterRecord:
        return self._write(lambda s: self._add_adapter(
            s, name=name, path=path, weights_sha256=weights_sha256, method=method, run_id=run_id,
            base_model_ref=base_model_ref, base_model_sha256=base_model_sha256, actor=actor))

    def _add_adapter(self, s: Session, *, name: str, path: str, weights_sha256: str, method: str,
                     run_id: int | None, base_model_ref: str, base_model_sha256: str | None,
                     actor: str | None) -> AdapterRecord:
        self._require(s, t.Run, run_id, "run")
        latest = s.scalar(select(func.max(t.Adapter.version)).where(t.Adapter.name == name))
        row = t.Adapter(name=name, version=(latest or 0) + 1, path=str(path), weights_sha256=weights_sha256,
                        method=method, run_id=run_id, base_model_ref=base_model_ref,
                        base_model_sha256=base_model_sha256, created_at=t.utcnow())
        s.add(row)
        s.flush()
        if run_id is not None:
            self._link(s, ("run", run_id), ("adapter", row.id), "produced")
        append_event(s, AdapterRegistered(
            adapter_id=row.id, name=name, version=row.version, weights_sha256=weights_sha256,
            method=method, run_id=run_id, base_model_sha256=base_model_sha256), actor)
        return snapshot(AdapterRecord, row)

    def get_adapter(self, name: str, version: int | None = None) -> AdapterRecord:
        def work(s: Session) -> AdapterRecord:
            query = select(t.Adapter).where(t.Adapter.name == name).order_by(t.Adapter.version.desc())
            if version is not None:
                query = query.where(t.Adapter.version == version)
            row = s.scalars(query.limit(1)).first()
            if row is not None:
                return snapshot(AdapterRecord, row)
            if version is not None:
                versions = [str(v) for v in s.scalars(
                    select(t.Adapter.version).where(t.Adapter.name == name).order_by(t.Adapter.version))]
                if versions:
                    raise NotFoundError(f"adapter '{name}' version {version} not found; known versions: "
                                        f"{_known(versions)}")
            names = list(s.scalars(select(t.Adapter.name).distinct().order_by(t.Adapter.name)))
            raise NotFoundError(f"adapter '{name}' not found; known: {_known(names)}")
        return self._read(work)

    def list_adapters(self) -> list[AdapterRecord]:
        return self._read(lambda s: [snapshot(AdapterRecord, r)
                                     for r in s.scalars(select(t.Adapter).order_by(t.Adapter.id))])

    # -- evaluations ---------------------------------------------------------------------------

    def add_evaluation(self, *, model_ref: str, adapter_id: int | None, dataset_id: int | None, split: str,
                       metrics: dict[str, Any], n_examples: int, results_path: str, report_path: str | None,
                       actor: str | None = None) -> EvaluationRecord:
        def work(s: Session) -> EvaluationRecord:
            self._require(s, t.Adapter, adapter_id, "adapter")
            self._require(s, t.Dataset, dataset_id, "dataset")
            row = t.Evaluation(model_ref=model_ref, adapter_id=adapter_id, dataset_id=dataset_id, split=split,
                               metrics=jsonable(metrics), n_examples=n_examples, results_path=str(results_path),
                               report_path=None if report_path is None else str(report_path), created_at=t.utcnow())
            s.add(row)
            s.flush()
            if adapter_id is not None:
                self._link(s, ("adapter", adapter_id), ("evaluation", row.id), "evaluated_by")
            if dataset_id is not None:
                self._link(s, ("dataset", dataset_id), ("evaluation", row.id), "input_to")
            append_event(s, EvaluationRecorded(
                evaluation_id=row.id, model_ref=model_ref, adapter_id=adapter_id, dataset_id=dataset_id,
                split=split, n_examples=n_examples, metrics=row.metrics), actor)
            return snapshot(EvaluationRecord, row)
        return self._write(work)

    def list_evaluations(self) -> list[EvaluationRecord]:
        return self._read(lambda s: [snapshot(EvaluationRecord, r)
                                     for r in s.scalars(select(t.Evaluation).order_by(t.Evaluation.id))])

    # -- retrieval indexes ---------------------------------------------------------------------

    def add_index(self, *, name: str, version: str, sha256: str, path: str, n_chunks: int,
                  source_files: list[dict[str, Any]], actor: str | None = None) -> IndexRecord:
        """Register an index version with lineage edges from its source files (by sha256).
        Registering the same name, version and content again is a no-op returning the existing record."""
        def work(s: Session) -> IndexRecord:
            existing = s.scalar(select(t.RetrievalIndex).where(t.RetrievalIndex.name == name,
                                                              t.RetrievalIndex.version == version))
            if existing is not None:
                if existing.sha256 != sha256:
                    raise TunewrightError(f"index '{name}' version '{version}' is already registered "
                                          f"with different content ({existing.sha256})")
                return snapshot(IndexRecord, existing)
            row = t.RetrievalIndex(name=name, version=version, sha256=sha256, path=str(path), n_chunks=n_chunks,
                                   source_files=jsonable(source_files), created_at=t.utcnow())
            s.add(row)
            s.flush()
            source_shas = list(dict.fromkeys(f["sha256"] for f in source_files))
            for sha in source_shas:
                self._link(s, ("file", sha), ("index", row.id), "source_of")
            append_event(s, IndexBuilt(index_id=row.id, name=name, version=version, sha256=sha256,
                                       n_chunks=n_chunks, source_sha256=source_shas), actor)
            return snapshot(IndexRecord, row)
        return self._write(work)

    def get_index(self, name: str, version: str | None = None) -> IndexRecord:
        """The named index's latest registered version, or the given one."""
        def work(s: Session) -> IndexRecord:
            query = select(t.RetrievalIndex).where(t.RetrievalIndex.name == name).order_by(t.RetrievalIndex.id.desc())
            if version is not None:
                query = query.where(t.RetrievalIndex.version == version)
            row = s.scalars(query.limit(1)).first()
            if row is not None:
                return snapshot(IndexRecord, row)
            if version is not None:
                versions = list(s.scalars(select(t.RetrievalIndex.version).where(t.RetrievalIndex.name == name)
                                          .order_by(t.RetrievalIndex.id)))
                if versions:
                    raise NotFoundError(f"index '{name}' version '{version}' not found; known versions: "
                                        f"{_known(versions)}")
            names = list(s.scalars(select(t.RetrievalIndex.name).distinct().order_by(t.RetrievalIndex.name)))
            raise NotFoundError(f"index '{name}' not found; known: {_known(names)}")
        return self._read(work)

    def list_indexes(self) -> list[IndexRecord]:
        return self._read(lambda s: [snapshot(IndexRecord, r)
                                     for r in s.scalars(select(t.RetrievalIndex).order_by(t.RetrievalIndex.id))])


def _sqlite_busy(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED and their extended codes
    message = str(orig).lower()
    return "database is locked" in message or "table is locked" in message or "busy" in message


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours and DDL is transactional too.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        # Before the journal switch, which itself needs the lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_TIMEOUT_MS)}")
        # WAL lets the review UI and the server read while the CLI writes; in the rollback journal
        # any open reader makes a writer's commit wait, and under load time out. The mode is stored
        # in the file, so this only does work the first time. In-memory databases stay "memory".
        try:
            cursor.execute("PRAGMA journal_mode=WAL").fetchall()
        except Exception as exc:
            if _sqlite_busy(exc):
                raise
            # A read-only file cannot change mode; it still works in the mode it has.
            log.warning("registry cannot switch to WAL journal mode: %s", exc)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers lock up front: otherwise two writers that both read the event tail deadlock on upgrade.
        immediate = conn.get_execution_options().get("tunewright_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
