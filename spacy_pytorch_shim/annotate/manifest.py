"""The output directory: `.spacy` shards and the manifest that makes a run
resumable.

`manifest.jsonl` starts with a header that fingerprints the pipeline (a
hash of every file in it) and the input (file paths, sizes and modification
times, shard size, text field). Every later line either records one shard
that is on disk (its file, document count, SHA-256 and the documents that
made the pipeline raise) or names files about to be written. A file is
named in the manifest before it is written, written to a temporary file and
renamed into place, and a shard is recorded only then: so a shard line means
a complete shard, and every file the command ever wrote is named in the
manifest. On resume the shards whose files still match their line are
kept; the other files the manifest names are removed and annotated again.
Files the manifest does not name are never removed or overwritten: one
named like the command's own refuses the directory.
"""
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import spacy.util

MANIFEST = "manifest.jsonl"
ERRORS = "errors.jsonl"
MANIFEST_VERSION = 1
# The names the command writes: shards, the manifest, errors.jsonl and the
# temporary file of each.
OWN_NAME = re.compile(r"(\d{6}\.spacy|manifest\.jsonl|errors\.jsonl)(\.tmp)?")
SHA256 = re.compile(r"[0-9a-f]{64}")


class PipelineError(ValueError):
    """The pipeline argument names no pipeline that can be loaded."""


class OutputError(ValueError):
    """The output directory holds something other than this command's files."""


def resolve_pipeline(pipeline: Union[str, Path]) -> Path:
    """The directory of a pipeline given as a path or a package name; its
    config must parse (loading it is the workers' job)."""
    path = Path(pipeline)
    if path.is_dir():
        if not (path / "config.cfg").is_file():
            raise PipelineError(f"{path}: not a spaCy pipeline directory (no config.cfg)")
        path = path.resolve()
    elif spacy.util.is_package(str(pipeline)):
        path = Path(spacy.util.get_package_path(str(pipeline)))
    else:
        raise PipelineError(f"{pipeline}: no such pipeline (neither a directory nor an installed package)")
    try:
        spacy.util.load_config(path / "config.cfg", interpolate=False)
    except Exception as err:
        raise PipelineError(f"{path / 'config.cfg'}: not a readable pipeline config ({one_line(err)})") from None
    return path


def pipeline_fingerprint(path: Path) -> str:
    """A SHA-256 over the relative path and content of every file of the
    pipeline: weights, config, vocab and meta."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(file.relative_to(path)).encode("utf8") + b"\0")
        digest.update(file_sha256(file).encode("ascii"))
    return digest.hexdigest()


def input_fingerprint(files: Sequence[Path], shard_size: int, text_field: str) -> Dict[str, Any]:
    stats = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]  # as JSON reads it back
    return {"files": stats, "shard_size": shard_size, "text_field": text_field}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def shard_name(index: int) -> str:
    return f"{index:06d}.spacy"


@dataclass
class ShardEntry:
    shard: int
    file: str
    docs: int
    sha256: str
    errors: List[Dict[str, Any]] = field(default_factory=list)


class Manifest:
    """The manifest of one output directory, opened for appending."""

    def __init__(self, output_dir: Path, header: Dict[str, Any]):
        self.output_dir = output_dir
        self.header = header
        self.entries: Dict[int, ShardEntry] = {}

    @classmethod
    def open(cls, output_dir: Union[str, Path], header: Dict[str, Any]) -> "Manifest":
        """Create the directory's manifest, or reopen it after checking that it
        belongs to the same pipeline and input, keeping only the shards that
        verify and removing the other files it names."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        manifest = cls(output_dir, {"manifest": MANIFEST_VERSION, **header})
        path = output_dir / MANIFEST
        owned: Set[str] = set()
        if path.exists():
            old_header, entries, written = read_manifest(path)
            manifest._check_same_run(old_header)
            owned = {MANIFEST, *written, *(entry.file for entry in entries)}
        manifest._refuse_foreign_files(owned)
        if not owned:
            with open(path, "x", encoding="utf8") as file:
                file.write(json.dumps(manifest.header) + "\n")
            return manifest
        for entry in entries:
            if manifest._verifies(entry):
                manifest.entries[entry.shard] = entry
        kept = {MANIFEST, ERRORS, *(entry.file for entry in manifest.entries.values())}
        for name in owned - kept:
            if (output_dir / name).is_file():
                (output_dir / name).unlink()
        lines = [manifest.header]
        if ERRORS in owned:
            lines.append({"writing": [ERRORS]})
        lines += [entry.__dict__ for _, entry in sorted(manifest.entries.items())]
        manifest._write(MANIFEST, "".join(json.dumps(line) + "\n" for line in lines).encode("utf8"))
        return manifest

    def _check_same_run(self, old: Dict[str, Any]) -> None:
        # A pipeline is the same when its files are (wherever it lies now).
        same = {
            "pipeline": old["pipeline"].get("sha256") == self.header["pipeline"]["sha256"],
            "input": old["input"] == self.header["input"],
            # Annotations (no key) or the teacher outputs of these components.
            "teacher_targets": old.get("teacher_targets") == self.header.get("teacher_targets"),
        }
        for what, is_same in same.items():
            if not is_same:
                describe = _describe_output if what == "teacher_targets" else _describe
                raise OutputError(
                    f"{self.output_dir}: holds shards of a different {'output' if what == 'teacher_targets' else what} "
                    f"(recorded in {MANIFEST}: {describe(old.get(what))}; this run: "
                    f"{describe(self.header.get(what))}). Use a new output directory, or delete "
                    "this one to start over."
                )

    def _refuse_foreign_files(self, owned: Set[str]) -> None:
        """Files named like the command's own (or any `.spacy`) that its
        manifest does not name: the command would overwrite or remove them."""
        foreign = sorted(
            p.name for p in self.output_dir.iterdir()
            if (p.suffix == ".spacy" or OWN_NAME.fullmatch(p.name)) and p.name not in owned
        )
        if not foreign:
            return
        if not owned:
            raise OutputError(
                f"{self.output_dir}: holds {foreign[0]} but no {MANIFEST}: not an output directory of "
                "this command. Use an empty or new directory."
            )
        raise OutputError(
            f"{self.output_dir / foreign[0]}: not written by this command (not named in its {MANIFEST}); "
            "move it out of the output directory."
        )

    def _verifies(self, entry: ShardEntry) -> bool:
        path = self.output_dir / entry.file
        return path.is_file() and file_sha256(path) == entry.sha256

    def _append(self, line: Dict[str, Any]) -> None:
        with open(self.output_dir / MANIFEST, "a", encoding="utf8") as file:
            file.write(json.dumps(line) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def _write(self, name: str, data: bytes) -> None:
        """Name the file and its temporary file in the manifest, write the
        temporary file and rename it into place."""
        tmp = name + ".tmp"
        self._append({"writing": [name, tmp]})
        with open(self.output_dir / tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(self.output_dir / tmp, self.output_dir / name)

    def add(self, shard: int, data: bytes, docs: int, errors: List[Dict[str, Any]]) -> ShardEntry:
        """Write one shard and record it."""
        entry = ShardEntry(shard, shard_name(shard), docs, hashlib.sha256(data).hexdigest(), errors)
        self._write(entry.file, data)
        self._append(entry.__dict__)
        self.entries[shard] = entry
        return entry

    def write_errors(self, extra: Sequence[Dict[str, Any]] = ()) -> Path:
        """errors.jsonl: every document that made the pipeline raise, in
        input order, from the manifest (so a resumed run lists each once),
        then `extra` (documents of shards that could not be written)."""
        errors = [error for _, entry in sorted(self.entries.items()) for error in entry.errors] + list(extra)
        self._write(ERRORS, "".join(json.dumps(error) + "\n" for error in errors).encode("utf8"))
        return self.output_dir / ERRORS


def read_manifest(path: Path) -> Tuple[Dict[str, Any], List[ShardEntry], Set[str]]:
    """The header, the shard lines and the names of the files written. A
    last line cut short by a crash is ignored (its shard is annotated
    again); any other damage is an OutputError naming the line."""
    lines = path.read_bytes().splitlines()
    if not lines:
        raise OutputError(f"{path}: empty manifest; delete the output directory to start over")
    header = _parse_line(path, 1, lines[0], last=False)
    if header is None or header.get("manifest") != MANIFEST_VERSION:
        raise OutputError(f"{path}:1: not a manifest header of this command; delete the output directory to start over")
    if not isinstance(header.get("pipeline"), dict) or not isinstance(header.get("input"), dict):
        raise OutputError(f"{path}:1: damaged manifest header (no pipeline or input); delete the output directory to start over")
    entries, written = [], set()
    for number, raw in enumerate(lines[1:], start=2):
        line = _parse_line(path, number, raw, last=number == len(lines))
        if line is None:
            continue
        if set(line) == {"writing"}:
            names = line["writing"]
            if not isinstance(names, list) or not all(isinstance(n, str) and OWN_NAME.fullmatch(n) for n in names):
                raise _damaged(path, number, "a 'writing' line that names other files")
            written.update(names)
            continue
        try:
            entry = ShardEntry(**line)
        except TypeError:
            raise _damaged(path, number, f"unexpected fields {', '.join(sorted(line))}") from None
        if not _valid_entry(entry):
            raise _damaged(path, number, "a shard line with a missing or wrong value")
        entries.append(entry)
    return header, entries, written


def _parse_line(path: Path, number: int, raw: bytes, last: bool) -> Optional[Dict[str, Any]]:
    """One manifest line as an object; None for a last line cut short."""
    try:
        line = json.loads(raw.decode("utf8"))
    except UnicodeDecodeError:
        raise _damaged(path, number, "not valid UTF-8") from None
    except json.JSONDecodeError:
        if last and number > 1:
            return None
        raise _damaged(path, number, "invalid JSON") from None
    if not isinstance(line, dict):
        raise _damaged(path, number, f"a {type(line).__name__}, not a JSON object")
    return line


def _valid_entry(entry: ShardEntry) -> bool:
    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    return (
        count(entry.shard) and count(entry.docs) and entry.file == shard_name(entry.shard)
        and isinstance(entry.sha256, str) and bool(SHA256.fullmatch(entry.sha256))
        and isinstance(entry.errors, list) and all(isinstance(error, dict) for error in entry.errors)
    )


def _damaged(path: Path, number: int, what: str) -> OutputError:
    return OutputError(f"{path}:{number}: damaged manifest line ({what}); delete the output directory to start over")


def iter_shard_paths(output_dir: Union[str, Path]) -> Iterator[Path]:
    """The shards of a finished or partial run in input order."""
    output_dir = Path(output_dir)
    _, entries, _ = read_manifest(output_dir / MANIFEST)
    for entry in sorted(entries, key=lambda entry: entry.shard):
        yield output_dir / entry.file


def one_line(err: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _describe_output(teacher_targets: Optional[List[str]]) -> str:
    return "annotations" if teacher_targets is None else f"the teacher outputs of {', '.join(teacher_targets)}"


def _describe(value: Optional[Dict[str, Any]]) -> str:
    if not value:
        return "nothing"
    if "files" in value:
        files = value["files"]
        names = ", ".join(Path(f[0]).name for f in files[:3]) + (", ..." if len(files) > 3 else "")
        return f"{len(files)} file(s) {names}, shard size {value.get('shard_size')}, text field {value.get('text_field')!r}"
    return f"{value.get('path')} (sha256 {str(value.get('sha256'))[:12]})"
