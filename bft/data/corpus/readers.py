"""Where the corpus comes from: resolve ``corpus.source`` and build the datatrove reader that streams it.

Sources: ``embedded`` (the shipped 80 documents), a file, a folder or a glob of shards (JSONL/JSON, plain,
``.gz`` or ``.zst``; Parquet; WARC, whose HTML is extracted with Trafilatura), a hub dataset's data files
(``corpus.glob`` in the repository) or a URL list (``corpus.url_list``, Dolma's), streamed through fsspec or read
from a local ``corpus.mirror`` (:mod:`bft.data.remote`); no loading scripts. ``corpus.perplexity_bucket`` keeps
Dolma's Common Crawl files of that bucket by their names (``cc_en_head-0000.json.gz``).
Every record is validated as it is read: with ``data.on_error=raise`` the first bad record ends the run with
``file:line: what is wrong``; with ``skip`` it is dropped and counted (``skipped_<reason>`` in the reader stats).
"""

from __future__ import annotations

import glob as globlib
import itertools
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.readers import ParquetReader, WarcReader
from datatrove.pipeline.readers.base import BaseDiskReader

from bft.config.schema import CorpusConfig
from bft.data.embedded import embedded_file
from bft.data.io import DataError, check_on_error, validate_record
from bft.data.remote import check_mirror, hub_glob, is_hub_id, listed_files, read_url_list, split_folder, url_list_location

EMBEDDED = "embedded"
COMPRESSIONS = (".gz", ".zst", ".zstd")
FORMAT_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".warc": "warc",
    ".arc": "warc",
}
FORMATS = ("auto", "jsonl", "parquet", "warc")
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Source:
    """A resolved corpus source: a folder (a local path, or an ``hf://`` / ``https://`` URL read through fsspec)
    and the files to read in it, in order."""

    name: str
    folder: str = ""
    files: tuple[str, ...] = ()
    format: str = "jsonl"

    @property
    def default_tasks(self) -> int:
        return max(1, len(self.files))


def file_format(name: str) -> str | None:
    """``jsonl``, ``parquet`` or ``warc`` from a file name (compression suffixes ignored), else None."""
    lower = name.lower()
    for suffix in COMPRESSIONS:
        if lower.endswith(suffix):
            lower = lower[: -len(suffix)]
    return FORMAT_SUFFIXES.get(os.path.splitext(lower)[1])


def _stem(name: str) -> str:
    base = os.path.basename(name)
    while os.path.splitext(base)[1].lower() in (*COMPRESSIONS, *FORMAT_SUFFIXES):
        base = os.path.splitext(base)[0]
    return base


def _pick_format(cfg: CorpusConfig, files: list[str], where: str) -> str:
    if cfg.format not in FORMATS:
        raise DataError("corpus.format", f"must be one of {FORMATS}, got {cfg.format!r}", "config")
    if cfg.format != "auto":
        return cfg.format
    found = {file_format(f) for f in files}
    if None in found or len(found) != 1:
        detail = ", ".join(sorted(f for f in files if file_format(f) is None)[:3]) or "several formats"
        raise DataError(where, f"cannot tell the format of the input files ({detail}); set corpus.format", "format")
    return found.pop()


def _listed(folder: Path, pattern: str) -> list[str]:
    paths = globlib.glob(str(folder / pattern), recursive=True)
    return sorted(os.path.relpath(p, folder) for p in paths if os.path.isfile(p) and not os.path.basename(p).startswith("."))


def resolve_source(cfg: CorpusConfig) -> Source:
    """Resolve ``cfg.source`` (with ``cfg.glob``, ``cfg.url_list``, ``cfg.mirror``) to the files to read, and keep
    those of ``cfg.perplexity_bucket`` (by file name); one-line DataError naming the key when nothing matches."""
    if cfg.url_list:
        return _url_list_source(cfg)  # the bucket chosen on the full URLs
    if cfg.source == EMBEDDED:
        folder = Path(str(resources.files("bft.data.embedded")))
        if not (folder / "corpus.jsonl").is_file():  # zipped install: materialise the one file
            with resources.as_file(embedded_file("corpus.jsonl")) as path:
                folder = Path(path).parent
        return _in_bucket(cfg, Source(EMBEDDED, str(folder), ("corpus.jsonl",), "jsonl"))
    source = cfg.source
    if any(ch in source for ch in _GLOB_CHARS):
        parts = Path(source).parts
        cut = next(i for i, part in enumerate(parts) if any(ch in part for ch in _GLOB_CHARS))
        folder, pattern = Path(*parts[:cut]) if cut else Path("."), str(Path(*parts[cut:]))
    else:
        path = Path(source).expanduser()
        if path.is_file():
            return _in_bucket(cfg, Source(_stem(path.name), str(path.parent), (path.name,), _pick_format(cfg, [path.name], source)))
        if not path.is_dir():
            if file_format(path.name) is None and is_hub_id(source):
                return _in_bucket(cfg, _hub_source(cfg))
            raise DataError(source, "file not found" if file_format(path.name) else "file or folder not found", "not_found")
        folder, pattern = path, cfg.glob or "**/*"
    files = _listed(folder, pattern)
    if cfg.format == "auto" and not any(ch in source for ch in _GLOB_CHARS) and cfg.glob is None:
        files = [f for f in files if file_format(f) is not None]
    if not files:
        raise DataError(f"{folder}/{pattern}", "no input files match", "not_found")
    resolved = Source(_stem(str(folder.resolve())), str(folder), tuple(files), _pick_format(cfg, files, source))
    return _in_bucket(cfg, resolved)


def _hub_source(cfg: CorpusConfig) -> Source:
    """A hub dataset read from its data files: ``corpus.glob`` inside the repository (or inside ``corpus.mirror``)."""
    if not cfg.glob:
        raise DataError(
            "corpus.glob",
            f"hub dataset {cfg.source} is read from its data files: set corpus.glob to their pattern in the repository "
            "(e.g. en/c4-train.*.json.gz) or corpus.url_list to a list of their URLs",
            "config",
        )
    folder, files = hub_glob(cfg.source, cfg.glob, cfg.mirror, "corpus.glob", "corpus.mirror")
    return Source(cfg.source, folder, tuple(files), _pick_format(cfg, files, f"{cfg.source}/{cfg.glob}"))


def _url_list_source(cfg: CorpusConfig) -> Source:
    """The files of a URL list (Dolma's ``urls/v1_6.txt``), in the list's order, local ones checked now."""
    local = cfg.source == EMBEDDED or any(ch in cfg.source for ch in _GLOB_CHARS) or Path(cfg.source).expanduser().exists()
    if local:
        problem = f"lists a hub dataset's files, but corpus.source is {cfg.source!r}: set corpus.url_list=null to read that"
        raise DataError("corpus.url_list", problem, "config")
    if cfg.mirror:
        check_mirror(cfg.mirror, "corpus.mirror")
    repo = cfg.source if is_hub_id(cfg.source) else None
    location = url_list_location(cfg.url_list, repo, cfg.mirror)
    urls = read_url_list(location, "corpus.url_list")
    bucketed = [u for u in urls if in_bucket(u, cfg.perplexity_bucket)] if _by_file_name(cfg) else urls
    if not bucketed:
        raise DataError("corpus.perplexity_bucket", _no_bucket_files(cfg.perplexity_bucket, urls, location), "not_found")
    files = listed_files(bucketed, cfg.mirror, "corpus.url_list", "corpus.mirror")
    folder, relative = split_folder(files, "corpus.url_list")
    return Source(repo or _stem(location), folder, tuple(relative), _pick_format(cfg, relative, location))


def bucket_pattern(bucket: str) -> re.Pattern[str]:
    """Dolma's Common Crawl files of one perplexity bucket: ``cc_en_<bucket>/`` or ``cc_en_<bucket>-NNNN.json.gz``."""
    return re.compile(rf"(?:^|/)cc_en_{re.escape(bucket)}(?:[-./]|$)")


def in_bucket(name: str, bucket: str | None) -> bool:
    return bucket is None or bucket_pattern(bucket).search(name) is not None


def _by_file_name(cfg: CorpusConfig) -> bool:
    """The bucket comes from the file names, unless ``corpus.bucket_field`` names a record field that holds it."""
    return cfg.perplexity_bucket is not None and cfg.bucket_field is None


def _no_bucket_files(bucket: str | None, names: list[str] | tuple[str, ...], where: str) -> str:
    return (
        f"no input file is in Dolma's CC {bucket!r} bucket (named cc_en_{bucket}-NNNN...) among the {len(names)} of "
        f"{where} (e.g. {names[0]}); set corpus.bucket_field if the records carry the bucket"
    )


def _in_bucket(cfg: CorpusConfig, source: Source) -> Source:
    if not _by_file_name(cfg):
        return source
    kept = tuple(f for f in source.files if in_bucket(f, cfg.perplexity_bucket))
    if not kept:
        raise DataError("corpus.perplexity_bucket", _no_bucket_files(cfg.perplexity_bucket, source.files, source.folder), "not_found")
    return Source(source.name, source.folder, kept, source.format)


class _BftDocuments:
    """Mixin for datatrove readers: validate each raw record and turn it into a Document with bft metadata."""

    def setup_bft(self, cfg: CorpusConfig, on_error: str, source_name: str, location_prefix: str) -> None:
        self.on_error = check_on_error(on_error)
        self.text_field = cfg.text_field
        self.id_field = cfg.id_field
        self.bucket_field = cfg.bucket_field
        self.source_name = source_name
        self.location_prefix = location_prefix
        self._seen_ids: set[int] = set()  # hashes of this task's ids (8 bytes each, not the corpus)

    def get_document_from_dict(self, data: dict, source_file: str, id_in_file: int | str) -> Document | None:
        line = id_in_file + 1 if isinstance(id_in_file, int) else id_in_file
        where = os.path.join(self.location_prefix, source_file) if self.location_prefix else source_file
        doc_id = data.get(self.id_field) if isinstance(data, dict) else None
        try:
            validate_record(data, f"{where}:{line}", {self.text_field: str})
            if doc_id is not None:
                key = hash((type(doc_id).__name__, doc_id if isinstance(doc_id, str | int) else str(doc_id)))
                if key in self._seen_ids:
                    raise DataError(f"{where}:{line}", f"duplicate {self.id_field} {doc_id!r}", "duplicate_id")
                self._seen_ids.add(key)
        except DataError as err:
            if self.on_error == "raise":
                raise RecordError(err.location, str(err).removeprefix(f"{err.location}: "), err.reason) from None
            self.stat_update(f"skipped_{err.reason}")
            return None
        name = _stem(source_file) if self.location_prefix and self.source_name != EMBEDDED else self.source_name
        metadata: dict[str, Any] = {
            "url": str(data.get("url") or ""),
            "source": str(data.get("source") or name),
        }
        if self.bucket_field:  # the record carries its perplexity bucket (top level or in ``metadata``)
            nested = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
            bucket = data.get(self.bucket_field, nested.get(self.bucket_field))
            if bucket is not None:
                metadata["bucket"] = str(bucket)
        index = id_in_file if isinstance(id_in_file, int) else str(id_in_file).replace("/", "-")
        fallback = f"{name}-{index:06d}" if isinstance(index, int) else f"{name}-{index}"
        return Document(text=data[self.text_field], id=str(doc_id) if doc_id is not None else fallback, metadata=metadata)


class RecordError(DataError):
    """A bad input record found inside a datatrove task: a DataError that survives pickling, so that a worker
    process of a multi-worker executor hands it back intact (DataError's constructor takes three arguments)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (str(self), self.location, self.reason))


def _rebuild(message: str, location: str, reason: str) -> RecordError:
    err = RecordError.__new__(RecordError)
    ValueError.__init__(err, message)
    err.location, err.reason = location, reason
    return err


def _parse_line(raw: bytes) -> Any:
    """One JSONL line: the parsed value, or a DataError (binary, not UTF-8, malformed JSON) without location."""
    if b"\x00" in raw:
        return DataError("", "line holds binary data (NUL bytes)", "binary")
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = raw[err.start : err.start + 1].hex()
        return DataError("", f"not valid UTF-8 (byte 0x{bad} at column {err.start + 1})", "non_utf8")
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        return DataError("", f"malformed JSON ({err.msg} at column {err.colno})", "malformed_json")


def _binary_lines(handle: Any, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Lines of a binary stream read in chunks (compressed streams may lack ``readline``)."""
    rest = b""
    while block := handle.read(chunk):
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


class _FileShards:
    """Mixin for disk readers: task ``rank`` reads ``files[rank::world_size]`` of the resolved, sorted list."""

    bft_files: list[str]

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        for doc in self.read_files_shard(self.bft_files[rank::world_size]):
            self.update_doc_stats(doc)
            yield doc


class JsonRecordsReader(_FileShards, _BftDocuments, BaseDiskReader):
    """JSONL (or one JSON list per file), plain or compressed; malformed lines follow ``on_error``."""

    name = "bft JSON/JSONL"

    def __init__(self, data_folder: str, compression: str | None = "infer", **kwargs: Any) -> None:
        super().__init__(data_folder, **kwargs)
        self.compression = compression

    def _items(self, filepath: str) -> Iterator[tuple[int, Any]]:
        """(index, parsed record or DataError) for every record; JSONL line by line, or one JSON list."""
        with self.data_folder.open(filepath, "rb", compression=self.compression) as handle:
            lines = _binary_lines(handle)
            first = next(lines, b"")
            if first.lstrip().startswith(b"["):  # one JSON list (read whole: such files are small by nature)
                try:
                    items = json.loads((first + b"".join(lines)).decode("utf-8"))
                except UnicodeDecodeError as err:
                    yield 0, DataError("", f"not valid UTF-8 (byte offset {err.start})", "non_utf8")
                    return
                except json.JSONDecodeError as err:
                    yield err.lineno - 1, DataError("", f"malformed JSON ({err.msg} at column {err.colno})", "malformed_json")
                    return
                yield from enumerate(items)
                return
            for index, raw in enumerate(itertools.chain([first], lines)):
                if raw.strip():
                    yield index, _parse_line(raw)

    def read_file(self, filepath: str):
        where = os.path.join(self.location_prefix, filepath)
        for index, item in self._items(filepath):
            with self.track_time():
                if isinstance(item, DataError):
                    if self.on_error == "raise":
                        raise RecordError(f"{where}:{index + 1}", str(item).removeprefix(": "), item.reason)
                    self.stat_update(f"skipped_{item.reason}")
                    continue
                document = self.get_document_from_dict(item, filepath, index)
            if document is not None:
                yield document


class BftParquetReader(_FileShards, _BftDocuments, ParquetReader):
    name = "bft Parquet"


class BftWarcReader(_FileShards, _BftDocuments, WarcReader):
    name = "bft WARC"


def per_task_limit(cfg: CorpusConfig, tasks: int) -> int:
    """datatrove's limit is per task: ``max_documents`` in all when one task, else split evenly over tasks."""
    if cfg.max_documents is None:
        return -1
    return cfg.max_documents if tasks == 1 else math.ceil(cfg.max_documents / tasks)


def make_reader(source: Source, cfg: CorpusConfig, on_error: str, tasks: int) -> list:
    """The reader steps for ``source`` (WARC adds the Trafilatura text extractor)."""
    limit = per_task_limit(cfg, tasks)
    kinds = {"jsonl": JsonRecordsReader, "parquet": BftParquetReader, "warc": BftWarcReader}
    reader = kinds[source.format](source.folder, limit=limit, text_key=cfg.text_field, id_key=cfg.id_field)
    reader.setup_bft(cfg, on_error, source.name, source.folder)
    reader.bft_files = list(source.files)
    if source.format != "warc":
        return [reader]
    from datatrove.pipeline.extractors import Trafilatura

    return [reader, Trafilatura(favour_precision=True, timeout=10.0)]
