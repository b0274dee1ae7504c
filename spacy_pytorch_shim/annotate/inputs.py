"""Input corpora cut into shards that a worker can read on its own.

The driver scans each input file once, line by line (or one `.spacy` file at
a time), validates every record and keeps only a shard plan: for each shard
of at most `shard_size` documents, the file, the byte range (or doc range in
a `.spacy` file), the line of its first record (for `.spacy`, the 1-based
position of its first doc) and the corpus position of its
first document. The plan is a few numbers per shard, never the text; workers
read their shard's records from the file themselves.
"""
import glob
import gc
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

from .manifest import one_line

FORMATS = {".jsonl": "jsonl", ".txt": "txt", ".spacy": "spacy"}
InputsArg = Union[str, Path, Sequence[Union[str, Path]]]


class InputError(ValueError):
    """Input that cannot be annotated: the message names the file and line."""


@dataclass(frozen=True)
class Shard:
    """One unit of work: the records of `path` in [start, end) (bytes for
    text formats, doc positions for `.spacy`), `count` documents from corpus
    position `first_index`, the first on line (or doc) `first_line`."""

    index: int
    path: str
    format: str
    start: int
    end: int
    first_line: int
    first_index: int
    count: int

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Record:
    """One input document before annotation: a text (with the other jsonl
    fields) or a Doc read from a `.spacy` file."""

    index: int
    line: int
    text: Optional[str]
    fields: Optional[Dict[str, Any]]
    doc: Optional[Doc]


def find_input_files(inputs: InputsArg, output_dir: Optional[Path] = None) -> List[Path]:
    """The input files in corpus order: a file, a directory (its `.jsonl`,
    `.txt` and `.spacy` files, recursively, sorted) or a glob, or a list of
    those (in the order given). Directories and globs leave out the files
    under `output_dir` (the command's own output); a file named there is
    refused."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    output_dir = output_dir.resolve() if output_dir is not None else None

    def is_output(file: Path) -> bool:
        return output_dir is not None and output_dir in file.resolve().parents

    files: List[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in FORMATS and not is_output(p))
            if not found:
                raise InputError(f"{path}: no .jsonl, .txt or .spacy files in this directory")
        elif path.is_file():
            if is_output(path):
                raise InputError(f"{path}: an input file inside the output directory {output_dir}")
            found = [path]
        elif glob.has_magic(str(item)):
            found = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file() and not is_output(Path(p)))
            if not found:
                raise InputError(f"{item}: no file matches this pattern")
        else:
            raise InputError(f"{item}: no such file or directory")
        for file in found:
            if file.suffix not in FORMATS:
                raise InputError(f"{file}: unknown input format (expected .jsonl, .txt or .spacy)")
        files.extend(found)
    if not files:
        raise InputError("no input files given")
    return [f.resolve() for f in files]


def parse_line(raw: bytes, path: str, line: int, format: str, text_field: str) -> Optional[Tuple[str, Optional[Dict[str, Any]]]]:
    """(text, other fields) of one input line; None for a blank line, which
    holds no document."""
    try:
        decoded = raw.decode("utf8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}:{line}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    if not decoded.strip():
        return None
    if format == "txt":
        return decoded.rstrip("\r\n"), None
    try:
        record = json.loads(decoded)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{line}: invalid JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}:{line}: expected a JSON object, found {type(record).__name__}")
    if text_field not in record:
        raise InputError(f"{path}:{line}: no text field {text_field!r} (fields: {', '.join(sorted(record)) or 'none'})")
    text = record.pop(text_field)
    if not isinstance(text, str):
        raise InputError(f"{path}:{line}: field {text_field!r} is a {type(text).__name__}, not a string")
    return text, record


@contextmanager
def _gc_kept_on() -> Iterator[None]:
    """srsly's msgpack reader turns the garbage collector off while it
    decodes and leaves it off when it raises: turn it back on."""
    gc_was_enabled = gc.isenabled()
    try:
        yield
    finally:
        if gc_was_enabled:
            gc.enable()


def read_doc_bin(path: Union[str, Path]) -> DocBin:
    """A `.spacy` file."""
    with _gc_kept_on():
        try:
            return DocBin(store_user_data=True).from_bytes(Path(path).read_bytes())
        except Exception as err:
            raise InputError(f"{path}: not a readable .spacy (DocBin) file ({one_line(err)})") from None


def check_docs(path: Path) -> int:
    """The number of docs of a `.spacy` file, each decoded once: a doc that
    cannot be is refused here, not in a worker."""
    docs = read_doc_bin(path).get_docs(Vocab())
    position = 0
    with _gc_kept_on():
        while True:
            try:
                next(docs)
            except StopIteration:
                return position
            except Exception as err:
                raise InputError(f"{path}:{position + 1}: doc {position + 1} cannot be decoded ({one_line(err)})") from None
            position += 1


def plan_shards(files: Sequence[Path], shard_size: int, text_field: str) -> Iterator[Shard]:
    """Scan and validate every input file in order, yielding its shards. A
    shard holds records of one file only."""
    index = 0
    next_doc = 0
    for path in files:
        format = FORMATS[path.suffix]
        if format == "spacy":
            n_docs = check_docs(path)
            for start in range(0, n_docs, shard_size):
                end = min(start + shard_size, n_docs)
                yield Shard(index, str(path), format, start, end, start + 1, next_doc, end - start)
                index += 1
                next_doc += end - start
            continue
        shard_start = offset = 0
        first_line = count = 0
        with path.open("rb") as file:
            for line, raw in enumerate(file, start=1):
                if parse_line(raw, str(path), line, format, text_field) is not None:
                    if count == 0:
                        shard_start, first_line = offset, line
                    count += 1
                offset += len(raw)
                if count == shard_size:
                    yield Shard(index, str(path), format, shard_start, offset, first_line, next_doc, count)
                    index += 1
                    next_doc += count
                    count = 0
        if count:
            yield Shard(index, str(path), format, shard_start, offset, first_line, next_doc, count)
            index += 1
            next_doc += count


def read_shard(shard: Shard, text_field: str, vocab: Vocab) -> List[Record]:
    """The records of one shard, read from its file."""
    if shard.format == "spacy":
        docs = read_doc_bin(shard.path).get_docs(vocab)
        records = [
            Record(shard.first_index + i, position + 1, None, None, doc)
            for i, (position, doc) in enumerate(_slice(docs, shard.start, shard.end))
        ]
    else:
        records = []
        with open(shard.path, "rb") as file:
            file.seek(shard.start)
            data = file.read(shard.end - shard.start)
        for line, raw in enumerate(_lines(data), start=shard.first_line):
            parsed = parse_line(raw, shard.path, line, shard.format, text_field)
            if parsed is not None:
                records.append(Record(shard.first_index + len(records), line, parsed[0], parsed[1], None))
    if len(records) != shard.count:
        raise InputError(
            f"{shard.path}: shard {shard.index} holds {len(records)} documents, the plan says "
            f"{shard.count}; did the file change during the run?"
        )
    return records


def _slice(docs: Iterable[Doc], start: int, end: int) -> Iterator[Tuple[int, Doc]]:
    for position, doc in enumerate(docs):
        if position >= end:
            return
        if position >= start:
            yield position, doc


def _lines(data: bytes) -> Iterator[bytes]:
    """Lines as a binary file iterates them: split after each b"\\n"."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end == -1 else end + 1
        yield data[start:end]
        start = end
