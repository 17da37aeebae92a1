"""Read and validate record files (JSONL or JSON list, plain or ``.gz``; Parquet); write JSONL atomically.

Every problem is reported as a one-line :class:`DataError` naming the file, the line (or item/row) and the key,
e.g. ``corpus.jsonl:17: field 'text' is missing``. With ``on_error="skip"`` bad records are dropped and counted
per reason instead.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bft.errors import BftError, writing

ON_ERROR_CHOICES = ("raise", "skip")
_BINARY_CONTROL_RATIO = 0.01


class DataError(BftError, ValueError):
    """A bad input file or record; the message is one line: ``file:line: what is wrong``."""

    def __init__(self, location: str, message: str, reason: str = "invalid") -> None:
        self.location = location
        self.reason = reason
        super().__init__(_one_line(f"{location}: {message}"))


@dataclass
class ReadResult:
    """Valid records in file order, and how many records were skipped for each reason."""

    records: list[dict[str, Any]]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())


def _one_line(text: str) -> str:
    return " ".join(text.split())


def check_on_error(on_error: str) -> str:
    """Validate an ``on_error`` policy string."""
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    return on_error


def is_binary_text(text: str) -> bool:
    """True for text holding NUL bytes or more than 1% control characters (other than tab/newline/CR/FF)."""
    if "\x00" in text:
        return True
    if not text:
        return False
    controls = sum(1 for ch in text if (ord(ch) < 32 and ch not in "\t\n\r\f") or 0x7F <= ord(ch) < 0xA0)
    return controls / len(text) > _BINARY_CONTROL_RATIO


def _type_name(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(t.__name__ for t in types)


def _type_ok(value: Any, expected: type | tuple[type, ...]) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types:
        return False
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def validate_record(
    record: Any,
    location: str,
    required: Mapping[str, type | tuple[type, ...]],
) -> dict[str, Any]:
    """Check one parsed record; raise :class:`DataError` (with a reason) on the first problem."""
    if not isinstance(record, dict):
        raise DataError(location, f"expected a JSON object, got {type(record).__name__}", "not_object")
    for key, expected in required.items():
        if key not in record or record[key] is None:
            raise DataError(location, f"field {key!r} is missing", "missing_field")
        value = record[key]
        if not _type_ok(value, expected):
            got = type(value).__name__
            raise DataError(location, f"field {key!r} must be {_type_name(expected)}, got {got}", "wrong_type")
        if isinstance(value, str):
            if not value.strip():
                raise DataError(location, f"field {key!r} is empty", "empty_field")
            if is_binary_text(value):
                raise DataError(location, f"field {key!r} holds binary/control characters", "binary")
    return record


def _open(path: Path) -> Any:
    """A binary handle on ``path``, decompressed when its name ends in ``.gz``."""
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def _iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield (location, parsed object or DataError) for every non-blank line."""
    with _open(path) as handle:
        for lineno, raw in enumerate(handle, start=1):
            location = f"{path}:{lineno}"
            if b"\x00" in raw:
                yield location, DataError(location, "line holds binary data (NUL bytes)", "binary")
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad = raw[err.start : err.start + 1].hex()
                yield (
                    location,
                    DataError(location, f"not valid UTF-8 (byte 0x{bad} at column {err.start + 1})", "non_utf8"),
                )
                continue
            if not line.strip():
                continue
            try:
                yield location, json.loads(line)
            except json.JSONDecodeError as err:
                yield (
                    location,
                    DataError(location, f"malformed JSON ({err.msg} at column {err.colno})", "malformed_json"),
                )


def _iter_json(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        with _open(path) as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(str(path), f"not valid UTF-8 (byte offset {err.start})", "non_utf8") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}", f"malformed JSON ({err.msg} at column {err.colno})", "malformed_json") from None
    if not isinstance(data, list):
        raise DataError(str(path), f"expected a JSON list of objects, got {type(data).__name__}", "not_list")
    for index, item in enumerate(data, start=1):
        yield f"{path}:item {index}", item


def _iter_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several unrelated error types
        raise DataError(str(path), f"unreadable Parquet file ({type(err).__name__}: {err})", "unreadable") from None
    for index, row in enumerate(table.to_pylist(), start=1):
        yield f"{path}:row {index}", row


def _starts_with_list(path: Path) -> bool:
    """True when the first non-blank character of the file is ``[`` (a JSON list); a ``.json`` file of lines is JSONL."""
    with _open(path) as handle:
        while chunk := handle.read(4096):
            head = chunk.lstrip()
            if head:
                return head.startswith(b"[")
    return True


def iter_raw(path: str | os.PathLike[str]) -> Iterator[tuple[str, Any]]:
    """Yield (location, record-or-DataError) from a .jsonl/.json (plain or .gz)/.parquet file, chosen by suffix (a
    .json file that does not start with ``[`` is read as JSON lines)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "file not found", "not_found")
    name = path.name.lower()
    suffix = Path(name.removesuffix(".gz")).suffix
    if name.endswith(".gz") and suffix not in (".jsonl", ".ndjson", ".json"):
        raise DataError(
            str(path), f"unsupported file type {suffix + '.gz'!r} (use .jsonl, .json, their .gz, or .parquet)", "unsupported"
        )
    if suffix in (".jsonl", ".ndjson"):
        return _iter_jsonl(path)
    if suffix == ".json":
        return _iter_json(path) if _starts_with_list(path) else _iter_jsonl(path)
    if suffix in (".parquet", ".pq"):
        return _iter_parquet(path)
    raise DataError(str(path), f"unsupported file type {suffix!r} (use .jsonl, .json or .parquet)", "unsupported")


def collect_records(
    items: Iterable[tuple[str, Any]],
    *,
    required: Mapping[str, type | tuple[type, ...]] | None = None,
    id_field: str | None = None,
    on_error: str = "raise",
) -> ReadResult:
    """Validate (location, record-or-error) pairs; raise on the first problem or skip and count."""
    check_on_error(on_error)
    required = dict(required or {})
    records: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    seen_ids: dict[Any, str] = {}
    for location, item in items:
        try:
            if isinstance(item, DataError):
                raise item
            record = validate_record(item, location, required)
            if id_field is not None and record.get(id_field) is not None:
                key = record[id_field]
                if key in seen_ids:
                    raise DataError(location, f"duplicate {id_field} {key!r} (first seen at {seen_ids[key]})", "duplicate_id")
                seen_ids[key] = location
        except DataError as err:
            if on_error == "raise":
                raise
            skipped[err.reason] += 1
            continue
        records.append(record)
    return ReadResult(records=records, skipped=dict(skipped))


def read_records(
    path: str | os.PathLike[str],
    *,
    required: Mapping[str, type | tuple[type, ...]] | None = None,
    id_field: str | None = None,
    on_error: str = "raise",
) -> ReadResult:
    """Read JSONL / JSON (list of objects) / Parquet, checking ``required`` fields (name -> type).

    Required string fields must be non-empty and free of binary junk; ``id_field`` values must be unique.
    ``on_error="raise"`` raises :class:`DataError` on the first bad record, ``"skip"`` drops and counts it.
    """
    check_on_error(on_error)
    return collect_records(iter_raw(path), required=required, id_field=id_field, on_error=on_error)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSONL file without validation (blank lines ignored)."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl_atomic(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> Path:
    """Write records as UTF-8 JSONL to a temp file in the same folder, then ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with writing(path), os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
