"""Tests for bft.data.io: validated reading of JSONL/JSON/Parquet and atomic JSONL writing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bft.data.io import DataError, read_jsonl, read_records, write_jsonl_atomic  # noqa: E402

REQ = {"id": str, "text": str}


def _write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def _good(i: int) -> str:
    return json.dumps({"id": f"d{i}", "text": f"document number {i}"})


def test_reads_valid_jsonl_and_ignores_blank_lines(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "corpus.jsonl", [_good(1), "", _good(2)])
    result = read_records(path, required=REQ, id_field="id")
    assert [r["id"] for r in result.records] == ["d1", "d2"]
    assert result.skipped == {}


def test_malformed_line_raises_one_line_error_with_file_and_line(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "corpus.jsonl", [_good(1), _good(2), '{"id": "d3", "text": '])
    with pytest.raises(DataError) as info:
        read_records(path, required=REQ)
    message = str(info.value)
    assert "corpus.jsonl:3:" in message and "malformed JSON" in message
    assert "\n" not in message


def test_missing_and_mistyped_fields_name_the_key(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "corpus.jsonl", [_good(1), json.dumps({"id": "d2"})])
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: field 'text' is missing"):
        read_records(path, required=REQ)
    path = _write_lines(tmp_path / "typed.jsonl", [json.dumps({"id": "d1", "text": 5})])
    with pytest.raises(DataError, match=r"typed\.jsonl:1: field 'text' must be str, got int"):
        read_records(path, required=REQ)


def test_skip_mode_counts_each_reason(tmp_path: Path) -> None:
    lines: list[str | bytes] = [
        _good(1),
        "{not json",
        json.dumps({"id": "d2"}),
        json.dumps({"id": "d3", "text": "   "}),
        b'{"id": "d4", "text": "caf\xe9"}',
        json.dumps({"id": "d5", "text": "junk \u0000\u0001\u0002 bytes"}),
        _good(1),
        json.dumps([1, 2]),
        _good(6),
    ]
    path = _write_lines(tmp_path / "mixed.jsonl", lines)
    result = read_records(path, required=REQ, id_field="id", on_error="skip")
    assert [r["id"] for r in result.records] == ["d1", "d6"]
    assert result.skipped == {
        "malformed_json": 1,
        "missing_field": 1,
        "empty_field": 1,
        "non_utf8": 1,
        "binary": 1,
        "duplicate_id": 1,
        "not_object": 1,
    }
    assert result.n_skipped == 7


def test_non_utf8_raises(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "latin1.jsonl", [_good(1), b'{"id": "d2", "text": "na\xefve"}'])
    with pytest.raises(DataError, match=r"latin1\.jsonl:2: not valid UTF-8"):
        read_records(path, required=REQ)


def test_binary_junk_raises(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "bin.jsonl", [b"\x00\x01\x02\xff\xfe garbage"])
    with pytest.raises(DataError, match=r"bin\.jsonl:1: .*binary"):
        read_records(path, required=REQ)


def test_duplicate_ids_raise(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "dup.jsonl", [_good(1), _good(2), _good(1)])
    with pytest.raises(DataError, match=r"dup\.jsonl:3: duplicate id 'd1' \(first seen at .*dup\.jsonl:1\)"):
        read_records(path, required=REQ, id_field="id")


def test_json_list_and_parquet(tmp_path: Path) -> None:
    rows = [{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta"}]
    json_path = tmp_path / "rows.json"
    json_path.write_text(json.dumps(rows))
    assert read_records(json_path, required=REQ).records == rows
    json_path.write_text(json.dumps([rows[0], {"id": "b"}]))
    with pytest.raises(DataError, match=r"rows\.json:item 2: field 'text' is missing"):
        read_records(json_path, required=REQ)

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq_path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), pq_path)
    assert read_records(pq_path, required=REQ, id_field="id").records == rows


def test_a_json_file_of_lines_is_read_as_jsonl_with_line_numbers(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "outputs.json", ["", _good(1), _good(2)])
    assert [r["id"] for r in read_records(path, required=REQ).records] == ["d1", "d2"]
    _write_lines(path, [_good(1), "[1, 2]"])
    with pytest.raises(DataError, match=r"outputs\.json:2: expected a JSON object, got list"):
        read_records(path)


def test_eval_sets_read_through_the_one_reader(tmp_path: Path) -> None:
    from bft.eval.sets import EvalSetError, load_eval_set

    path = _write_lines(tmp_path / "eval.jsonl", [json.dumps({"instruction": "Say hi.", "output": "hi"}), "{broken"])
    with pytest.raises(EvalSetError, match=r"eval\.jsonl:2: malformed JSON"):
        load_eval_set(str(path))
    _write_lines(path, [json.dumps({"instruction": "Say hi.", "output": "hi"})])
    assert load_eval_set(str(path)) == [{"instruction": "Say hi.", "output": "hi", "generator": "reference", "dataset": "unknown"}]


def test_unknown_suffix_missing_file_and_bad_policy(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_records(tmp_path / "nope.jsonl")
    other = tmp_path / "data.csv"
    other.write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        read_records(other)
    with pytest.raises(ValueError, match="on_error"):
        read_records(other, on_error="ignore")


def test_write_jsonl_atomic_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.jsonl"
    records = [{"id": "x", "text": "héllo"}, {"id": "y", "text": "wörld"}]
    write_jsonl_atomic(path, records)
    assert read_jsonl(path) == records
    write_jsonl_atomic(path, records[:1])
    assert read_jsonl(path) == records[:1]
    assert [p.name for p in path.parent.iterdir()] == ["out.jsonl"]


def test_write_jsonl_atomic_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl_atomic(path, [{"a": 1}])

    def broken():
        yield {"a": 2}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(path, broken())
    assert read_jsonl(path) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
