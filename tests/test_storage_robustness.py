"""Storage under contention and crashes: several processes writing one SQLite registry, and
``atomic_dir`` killed between its renames."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tunewright import io
from tunewright.govern.audit import verify_log
from tunewright.registry import Registry, WorkspaceCreated
from tunewright.registry import api as registry_api

WRITERS = 3
EVENTS_PER_WRITER = 200


# -- the registry: WAL, busy timeout, retry on "database is locked" --------------------------------

def _writer(url: str, barrier, index: int, n_events: int, results) -> None:
    """One process as the CLI, the server or the review UI is: its own Registry, writing while
    reading the log back between writes."""
    os.environ["TUNEWRIGHT_ACTOR"] = f"writer-{index}"
    try:
        barrier.wait(timeout=120)  # all open (and migrate) the new file at once, then write at once
        registry = Registry(url)
        for i in range(n_events):
            registry.record(WorkspaceCreated(name=f"w{index}-{i}", root=f"/ws/{index}"))
            registry.events(limit=5)
            if i % 25 == 0:
                registry.add_dataset(name=f"d{index}", version=f"v{i}", content_sha256=f"{index:02d}{i:062d}",
                                     path=f"datasets/d{index}", n_train=1, n_eval=1, n_duplicates=0,
                                     source_files=[], spec={})
        registry.close()
    except BaseException as exc:  # reported to the parent: a child's traceback is not shown by pytest
        results.put((index, f"{type(exc).__name__}: {exc}"))
        return
    results.put((index, None))


def test_three_writer_processes_all_succeed_and_the_chain_verifies(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWRIGHT_ACTOR", "setup")
    path = tmp_path / "registry.db"
    url = f"sqlite:///{path}"
    Registry(url).close()
    # This process plays the review UI: a read left open for the whole run. Under the rollback
    # journal no writer could commit until it ends, and it ends only after they all report back.
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM events").fetchone() == (0,)

    ctx = multiprocessing.get_context("spawn")  # fork would copy pytest's threads and locks
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    processes = [ctx.Process(target=_writer, args=(url, barrier, i, EVENTS_PER_WRITER, results))
                 for i in range(WRITERS)]
    for process in processes:
        process.start()
    try:
        outcomes = dict(results.get(timeout=300) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
        snapshot = reader.execute("SELECT count(*) FROM events").fetchone()
        reader.execute("COMMIT")
        reader.close()
    assert outcomes == {i: None for i in range(WRITERS)}
    assert snapshot == (0,)  # the reader kept one consistent view throughout

    registry = Registry(url)
    try:
        events = registry.events()
        datasets_per_writer = len(range(0, EVENTS_PER_WRITER, 25))
        assert len(events) == WRITERS * (EVENTS_PER_WRITER + datasets_per_writer)
        assert {e.actor for e in events} == {f"writer-{i}" for i in range(WRITERS)}
        assert registry.verify_events() == (True, None)
        audit = verify_log(registry)
        assert audit.n_events == len(events) and not audit.damage
    finally:
        registry.close()


@pytest.fixture
def reg(tmp_path, monkeypatch):
    # Short enough that a test holding the lock sees SQLite give up at once; long before the fix.
    monkeypatch.setattr(registry_api, "_SQLITE_BUSY_TIMEOUT_MS", 50, raising=False)
    monkeypatch.setenv("TUNEWRIGHT_ACTOR", "tester")
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    yield registry
    registry.close()


def _db_path(registry: Registry) -> Path:
    return Path(registry.engine.url.database)


def test_sqlite_registry_runs_in_wal_mode_with_a_busy_timeout(reg):
    with reg.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 50


def test_an_open_reader_does_not_block_a_writer(reg):
    """The review UI holding a read open while the CLI records: under the rollback journal the
    commit would wait for the reader and fail with "database is locked"."""
    reg.record(WorkspaceCreated(name="first", root="/ws"))
    reader = sqlite3.connect(_db_path(reg), isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM events").fetchone() == (1,)
        reg.record(WorkspaceCreated(name="second", root="/ws"))
        assert reader.execute("SELECT count(*) FROM events").fetchone() == (1,)  # its snapshot holds
        reader.execute("COMMIT")
    finally:
        reader.close()
    assert [e.payload["name"] for e in reg.events()] == ["first", "second"]
    assert reg.verify_events() == (True, None)


def test_a_locked_write_is_retried_after_a_backoff(reg, monkeypatch):
    """Another process holds the write lock past the busy timeout and lets go while this one
    backs off: the write lands once, on the second try, without any real waiting."""
    reg.record(WorkspaceCreated(name="before", root="/ws"))
    other = sqlite3.connect(_db_path(reg), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    waits: list[float] = []

    def back_off(seconds: float) -> None:
        waits.append(seconds)
        other.execute("COMMIT")  # the other writer finishes while we wait

    monkeypatch.setattr(registry_api, "_sleep", back_off, raising=False)
    try:
        reg.record(WorkspaceCreated(name="after", root="/ws"))
    finally:
        other.close()
    assert len(waits) == 1 and 0 < waits[0] <= registry_api._BUSY_BACKOFF_MAX_S
    assert [e.payload["name"] for e in reg.events()] == ["before", "after"]
    assert reg.verify_events() == (True, None)


def test_busy_retries_are_bounded_and_back_off(reg, monkeypatch):
    other = sqlite3.connect(_db_path(reg), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    waits: list[float] = []
    monkeypatch.setattr(registry_api, "_sleep", waits.append, raising=False)
    try:
        with pytest.raises(OperationalError, match="locked"):
            reg.record(WorkspaceCreated(name="never", root="/ws"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert len(waits) == registry_api._BUSY_RETRIES
    ceilings = [min(registry_api._BUSY_BACKOFF_S * 2**i, registry_api._BUSY_BACKOFF_MAX_S) for i in range(len(waits))]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings))
    assert reg.events() == []


def test_other_database_errors_are_not_retried(reg, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(registry_api, "_sleep", waits.append, raising=False)
    calls = []

    def work(session):
        calls.append(1)
        session.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(OperationalError, match="no such table"):
        reg.write(work)
    assert calls == [1] and waits == []


def test_in_memory_registry_still_works(monkeypatch):
    monkeypatch.setenv("TUNEWRIGHT_ACTOR", "tester")
    registry = Registry("sqlite://")
    try:
        registry.record(WorkspaceCreated(name="mem", root="/ws"))
        assert registry.verify_events() == (True, None)
    finally:
        registry.close()


# -- atomic_dir: crash-safe replacement -----------------------------------------------------------

def _fill(folder: Path, tag: str) -> None:
    (folder / "weights.bin").write_bytes(tag.encode() * 1000)
    (folder / "nested").mkdir()
    (folder / "nested" / "config.json").write_text(f'{{"tag": "{tag}"}}')


def _content(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _expected(tmp_path: Path, tag: str) -> dict[str, bytes]:
    folder = tmp_path / f"expected-{tag}"
    folder.mkdir()
    _fill(folder, tag)
    return _content(folder)


def _leftovers(final: Path) -> list[str]:
    return sorted(p.name for p in final.parent.iterdir() if p.name.startswith(f".{final.name}."))


def _rename_fails_after(monkeypatch, allowed: int) -> list:
    """os.replace and os.rename do ``allowed`` renames, then each further one fails."""
    calls: list = []
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) > allowed:
            raise OSError("simulated crash between renames")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", replace)
    return calls


def test_crash_between_renames_leaves_the_old_folder_recoverable(tmp_path, monkeypatch):
    final = tmp_path / "adapter"
    with io.atomic_dir(final) as tmp:
        _fill(tmp, "old")
    old = _expected(tmp_path, "old")

    with monkeypatch.context() as patch:
        calls = _rename_fails_after(patch, 1)  # final moves aside, then nothing can be renamed back
        with pytest.raises(OSError, match="simulated crash"):
            with io.atomic_dir(final) as tmp:
                _fill(tmp, "new")
        assert calls[0] == ("adapter", ".adapter.old")

    # The previous folder, complete, is where atomic_dir documents it; a reader recovers it.
    assert _content(tmp_path / ".adapter.old") == old
    assert io.recover_dir(final) == final
    assert _content(final) == old and _leftovers(final) == []

    with io.atomic_dir(final) as tmp:
        _fill(tmp, "new")
    assert _content(final) == _expected(tmp_path, "new") and _leftovers(final) == []


def test_a_failed_second_rename_puts_the_old_folder_straight_back(tmp_path, monkeypatch):
    final = tmp_path / "adapter"
    with io.atomic_dir(final) as tmp:
        _fill(tmp, "old")

    with monkeypatch.context() as patch:
        real_replace = os.replace
        calls = []

        def replace(src, dst):
            calls.append(Path(src).name)
            if len(calls) == 2:  # only the rename of the new folder into place fails
                raise OSError("simulated failure")
            return real_replace(src, dst)

        patch.setattr(os, "replace", replace)
        patch.setattr(os, "rename", replace)
        with pytest.raises(OSError, match="simulated failure"):
            with io.atomic_dir(final) as tmp:
                _fill(tmp, "new")

    assert _content(final) == _expected(tmp_path, "old") and _leftovers(final) == []


def _crashing_child(final: str, dies_at: int) -> None:
    """Replace ``final``, dying with os._exit (no cleanup, no finally) at rename number ``dies_at``."""
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(1)
        if len(calls) == dies_at:
            os._exit(17)
        return real_replace(src, dst)

    os.replace = os.rename = replace
    with io.atomic_dir(final) as tmp:
        _fill(tmp, "new")
    os._exit(0)


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX process kill")
@pytest.mark.parametrize("dies_at", [1, 2])
def test_process_killed_mid_swap_the_next_call_recovers(tmp_path, dies_at):
    final = tmp_path / "adapter"
    with io.atomic_dir(final) as tmp:
        _fill(tmp, "old")
    old, new = _expected(tmp_path, "old"), _expected(tmp_path, "new")

    child = multiprocessing.get_context("spawn").Process(target=_crashing_child, args=(str(final), dies_at))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 17

    # Killed before its first rename the old folder is untouched; killed before its second only the
    # documented .adapter.old holds a complete folder, and recover_dir puts it back.
    assert _content(io.recover_dir(final)) == old
    with io.atomic_dir(final) as tmp:
        _fill(tmp, "new")
    assert _content(final) == new
    assert not (tmp_path / ".adapter.old").exists()


def test_a_stale_old_folder_never_replaces_a_finished_one(tmp_path):
    """Killed after the second rename, before deleting the old folder: the new folder stays."""
    final = tmp_path / "adapter"
    with io.atomic_dir(final) as tmp:
        _fill(tmp, "new")
    stale = tmp_path / ".adapter.old"
    stale.mkdir()
    _fill(stale, "old")
    assert _content(io.recover_dir(final)) == _expected(tmp_path, "new")
    assert not stale.exists()


def test_files_the_folder_and_its_parent_are_fsynced(tmp_path, monkeypatch):
    synced: set[tuple[int, int]] = set()
    real_fsync = os.fsync

    def fsync(fd):
        info = os.fstat(fd)
        synced.add((info.st_dev, info.st_ino))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    final = tmp_path / "out" / "adapter"
    with io.atomic_dir(final) as tmp:
        _fill(tmp, "new")

    def key(path: Path) -> tuple[int, int]:
        info = os.stat(path)
        return info.st_dev, info.st_ino

    for path in (final / "weights.bin", final / "nested" / "config.json", final / "nested", final, final.parent):
        assert key(path) in synced, f"{path} was not fsynced"


def test_a_failing_body_keeps_the_old_folder_and_leaves_nothing_behind(tmp_path):
    final = tmp_path / "adapter"
    with io.atomic_dir(final) as tmp:
        _fill(tmp, "old")
    with pytest.raises(RuntimeError):
        with io.atomic_dir(final) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("training diverged")
    assert _content(final) == _expected(tmp_path, "old") and _leftovers(final) == []


def test_readers_of_replaced_folders_recover_a_swap_cut_short(tmp_path):
    """A crash between atomic_dir's two renames leaves no folder, only '.<name>.old': the adapter
    reader and the index loader put it back instead of calling the folder missing."""
    from tunewright.models.adapters import read_adapter_config
    from tunewright.retrieval import Index, build_index

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    adapter.rename(tmp_path / ".adapter.old")
    assert read_adapter_config(adapter)["r"] == 4 and adapter.is_dir()
    assert not (tmp_path / ".adapter.old").exists()

    doc = tmp_path / "rules.md"
    doc.write_text("## Returns\n- Items can be returned within 45 days.\n")
    index_dir = build_index([doc]).save(tmp_path / "index")
    index_dir.rename(tmp_path / ".index.old")
    assert len(Index.load(tmp_path / "index")) == 1 and (tmp_path / "index").is_dir()
