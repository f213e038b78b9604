"""Read raw records from data files, one reader per file format.

Every reader yields ``(line_or_row_number, record)`` so later stages can point the user at the exact
place to fix. Adding a format is one generator function plus one ``@register_reader`` line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, ClassVar, Iterator

from ..errors import NotFoundError, TunewrightError
from ..plugins import PluginRegistry

Record = tuple[int, dict]
Reader = Callable[[Path], Iterator[Record]]


class FileReader:
    """One file suffix's reader in the plugin registry: its ``name`` is the suffix without the dot."""

    name: ClassVar[str]
    read: ClassVar[Reader]


READERS: PluginRegistry[FileReader] = PluginRegistry("data reader", group="readers")


def register_reader(*suffixes: str) -> Callable[[Reader], Reader]:
    """``@register_reader(".csv")`` over a generator function of ``(line, record)``; a suffix
    registered twice is refused, like any plugin name."""
    def add(reader: Reader) -> Reader:
        for suffix in suffixes:
            name = suffix.lower().removeprefix(".")
            READERS.register(type(f"{reader.__name__}_{name}", (FileReader,),
                                  {"name": name, "read": staticmethod(reader)}))
        return reader

    return add


def reader_for(suffix: str) -> Reader | None:
    name = suffix.lower().removeprefix(".")
    return READERS.get_class(name).read if name in READERS else None


def supported_suffixes() -> list[str]:
    return ["." + name for name in READERS.names()]


def iter_records(path: str | Path) -> Iterator[Record]:
    """Yield ``(number, record)`` for every row of ``path``.

    A missing file or unknown suffix raises here, before iteration starts, so callers fail fast
    on a typo. Problems inside the file raise during iteration, naming the line.
    """
    path = Path(path)
    reader = reader_for(path.suffix)
    if reader is None:
        shown = path.suffix or "(none)"
        raise TunewrightError(
            f"unsupported file type {shown}; supported: {', '.join(supported_suffixes())}", file=path
        )
    if not path.exists():
        raise NotFoundError("file not found", file=path)
    if path.is_dir():
        raise TunewrightError("is a folder, expected a data file", file=path)
    return _non_empty(path, reader(path))


def _non_empty(path: Path, records: Iterator[Record]) -> Iterator[Record]:
    seen = False
    for item in records:
        seen = True
        yield item
    if not seen:
        raise TunewrightError("file has no rows", file=path)


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Decode line by line so a bad byte is reported at its own line, not the whole file."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TunewrightError(
                    f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                    "re-save the file as UTF-8",
                    file=path,
                    line=number,
                ) from None
            if number == 1:
                text = text.removeprefix("\ufeff")  # editors on Windows often write a BOM
            yield number, text


@register_reader(".jsonl", ".jsonlines", ".ndjson")
def read_jsonl(path: Path) -> Iterator[Record]:
    for number, text in _decoded_lines(path):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TunewrightError(
                f"malformed JSON: {exc.msg} (column {exc.colno})", file=path, line=number
            ) from None
        if not isinstance(record, dict):
            raise TunewrightError(
                f"expected a JSON object per line, got {_json_type(record)}", file=path, line=number
            )
        yield number, record


@register_reader(".csv")
def read_csv(path: Path) -> Iterator[Record]:
    lines = _decoded_lines(path)
    # csv.reader needs only strings; the line numbers come from reader.line_num, which counts
    # physical lines and so stays right when a quoted cell spans several of them.
    reader = csv.reader((text for _, text in lines), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip() for name in header]
        _check_header(path, header)
        last_line = reader.line_num
        for row in reader:
            number, last_line = last_line + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise TunewrightError(
                    f"row has {len(row)} columns but the header has {len(header)}", file=path, line=number
                )
            yield number, dict(zip(header, row))
    except csv.Error as exc:
        raise TunewrightError(f"malformed CSV: {exc}", file=path, line=reader.line_num) from None


def _check_header(path: Path, header: list[str]) -> None:
    seen: set[str] = set()
    for name in header:
        if not name:
            raise TunewrightError("header has an empty column name", file=path, line=1)
        if name in seen:
            raise TunewrightError("column appears twice in the header", file=path, line=1, field=name)
        seen.add(name)


@register_reader(".parquet", ".pq")
def read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    number = 0
    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                number += 1
                yield number, record
    except (pa.ArrowException, OSError) as exc:
        raise TunewrightError(
            f"cannot read Parquet file: {exc}", file=path, line=number + 1 if number else None
        ) from None


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
