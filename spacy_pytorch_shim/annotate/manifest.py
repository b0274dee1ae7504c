"""The output directory: `.spacy` shards and the manifest that makes a run
resumable.

`manifest.jsonl` starts with a header that fingerprints the pipeline (a
hash of every file in it) and the input (file paths, sizes and modification
times, shard size, text field). Every later line records one shard that is
on disk: its file, document count, SHA-256 and the documents that made the
pipeline raise. A shard is written to a temporary file, renamed into place
and only then recorded, so a line in the manifest means a complete shard.
On resume the shards whose files still match their line are kept; anything
else in the directory is removed and annotated again.
"""
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import spacy.util

MANIFEST = "manifest.jsonl"
ERRORS = "errors.jsonl"
MANIFEST_VERSION = 1


class PipelineError(ValueError):
    """The pipeline argument names neither a pipeline directory nor an
    installed pipeline package."""


class OutputError(ValueError):
    """The output directory holds something other than this run's shards."""


def resolve_pipeline(pipeline: Union[str, Path]) -> Path:
    """The directory of a pipeline given as a path or a package name."""
    path = Path(pipeline)
    if path.is_dir():
        if not (path / "config.cfg").exists():
            raise PipelineError(f"{path}: not a spaCy pipeline directory (no config.cfg)")
        return path.resolve()
    if spacy.util.is_package(str(pipeline)):
        return Path(spacy.util.get_package_path(str(pipeline)))
    raise PipelineError(f"{pipeline}: no such pipeline (neither a directory nor an installed package)")


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
        belongs to the same pipeline and input and keeping only the shards
        that verify."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        header = {"manifest": MANIFEST_VERSION, **header}
        manifest = cls(output_dir, header)
        path = output_dir / MANIFEST
        if path.exists():
            old_header, entries = read_manifest(path)
            manifest._check_same_run(old_header)
            for entry in entries:
                if manifest._verifies(entry):
                    manifest.entries[entry.shard] = entry
        elif any(output_dir.glob("*.spacy")):
            raise OutputError(
                f"{output_dir}: holds .spacy files but no {MANIFEST}; not an output directory "
                "of this command. Use an empty or new directory."
            )
        manifest._remove_unrecorded_files()
        manifest._rewrite()
        return manifest

    def _check_same_run(self, old: Dict[str, Any]) -> None:
        # A pipeline is the same when its files are (wherever it lies now).
        same = {
            "pipeline": (old.get("pipeline") or {}).get("sha256") == self.header["pipeline"]["sha256"],
            "input": old.get("input") == self.header["input"],
        }
        for what, is_same in same.items():
            if not is_same:
                raise OutputError(
                    f"{self.output_dir}: holds shards of a different {what} "
                    f"(recorded in {MANIFEST}: {_describe(old.get(what))}; this run: "
                    f"{_describe(self.header.get(what))}). Use a new output directory, or delete "
                    "this one to start over."
                )

    def _verifies(self, entry: ShardEntry) -> bool:
        path = self.output_dir / entry.file
        return path.is_file() and file_sha256(path) == entry.sha256

    def _remove_unrecorded_files(self) -> None:
        kept = {entry.file for entry in self.entries.values()}
        for path in self.output_dir.iterdir():
            if path.name.endswith(".tmp") or (path.suffix == ".spacy" and path.name not in kept):
                path.unlink()

    def _rewrite(self) -> None:
        """The manifest with only the verified shards, replaced atomically."""
        lines = [self.header] + [entry.__dict__ for _, entry in sorted(self.entries.items())]
        tmp = self.output_dir / (MANIFEST + ".tmp")
        tmp.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf8")
        os.replace(tmp, self.output_dir / MANIFEST)

    def add(self, shard: int, data: bytes, docs: int, errors: List[Dict[str, Any]]) -> ShardEntry:
        """Write one shard (temporary file, then rename) and record it."""
        name = shard_name(shard)
        tmp = self.output_dir / (name + ".tmp")
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.output_dir / name)
        entry = ShardEntry(shard, name, docs, hashlib.sha256(data).hexdigest(), errors)
        with open(self.output_dir / MANIFEST, "a", encoding="utf8") as file:
            file.write(json.dumps(entry.__dict__) + "\n")
            file.flush()
            os.fsync(file.fileno())
        self.entries[shard] = entry
        return entry

    def write_errors(self) -> Path:
        """errors.jsonl: every document that made the pipeline raise, in
        input order, from the manifest (so a resumed run lists each once)."""
        path = self.output_dir / ERRORS
        tmp = self.output_dir / (ERRORS + ".tmp")
        with open(tmp, "w", encoding="utf8") as file:
            for _, entry in sorted(self.entries.items()):
                for error in entry.errors:
                    file.write(json.dumps(error) + "\n")
        os.replace(tmp, path)
        return path


def read_manifest(path: Path) -> "tuple[Dict[str, Any], List[ShardEntry]]":
    """The header and shard lines. A last line cut short by a crash is
    ignored: its shard is annotated again."""
    lines = path.read_text(encoding="utf8").splitlines()
    if not lines:
        raise OutputError(f"{path}: empty manifest; delete the output directory to start over")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        raise OutputError(f"{path}:1: unreadable manifest header; delete the output directory to start over") from None
    if header.get("manifest") != MANIFEST_VERSION:
        raise OutputError(f"{path}: not a manifest of this command (version {header.get('manifest')!r})")
    entries = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            entries.append(ShardEntry(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            if number != len(lines):
                raise OutputError(f"{path}:{number}: unreadable manifest line") from None
    return header, entries


def iter_shard_paths(output_dir: Union[str, Path]) -> Iterator[Path]:
    """The shards of a finished or partial run in input order."""
    output_dir = Path(output_dir)
    _, entries = read_manifest(output_dir / MANIFEST)
    for entry in sorted(entries, key=lambda entry: entry.shard):
        yield output_dir / entry.file


def _describe(value: Optional[Dict[str, Any]]) -> str:
    if not value:
        return "nothing"
    if "files" in value:
        files = value["files"]
        names = ", ".join(Path(f[0]).name for f in files[:3]) + (", ..." if len(files) > 3 else "")
        return f"{len(files)} file(s) {names}, shard size {value['shard_size']}, text field {value['text_field']!r}"
    return f"{value.get('path')} (sha256 {str(value.get('sha256'))[:12]})"
