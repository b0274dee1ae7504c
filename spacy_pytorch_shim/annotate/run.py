"""Annotate a corpus with a trained pipeline on a Ray cluster (Ray Data).

The driver plans shards (`inputs.plan_shards`), and hands the plan of the
shards not yet done to Ray Data as a dataset of one small row per shard.
`map_batches` runs `ShardAnnotator`, a callable class, on a fixed pool of
actors: each loads the pipeline once in `__init__` (an `nlp` object does not
survive Ray's object store, spaCy #13506), reads its shard from the input
file, runs `nlp.pipe` and returns the shard as `DocBin` bytes. The driver
streams the results back (`iter_rows`), writes each shard and records it in
the manifest. Ray Data limits the shards in flight, so neither the driver nor
a worker ever holds more than a few shards. `TargetsAnnotator` stores a
teacher's outputs for distillation instead (`teacher_targets=True`).

Ray restarts an actor whose process dies and runs its task again, up to
`WORKER_RETRIES` times. `DeathNotes`, a small actor, keeps what each shard's
worker was doing: the next try of a shard whose worker died annotates it one
document at a time, noting each, and the try after a death on one document
alone stops the run naming that document (in `errors.jsonl`), so a document
that kills its worker every time costs two restarts, not an endless loop.
Errors a worker meets that are the user's to fix (a pipeline that does not
load, an input file that changed) come back as data and end the run with one
line; so does any failure of Ray itself.
"""
import math
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy

from .inputs import InputError, InputsArg, Record, Shard, find_input_files, plan_shards, read_shard
from .manifest import (
    ERRORS, Manifest, OutputError, PipelineError, input_fingerprint, one_line, pipeline_fingerprint, resolve_pipeline,
)

ON_ERROR = ("skip", "fail")
# The command's option for each argument of `annotate` that it checks.
OPTIONS = {
    "workers": "--workers", "shard_size": "--shard-size", "batch_size": "--batch-size",
    "threads_per_worker": "--threads-per-worker", "num_gpus": "--gpus-per-worker", "on_error": "--on-error",
    "text_field": "--text-field", "address": "--address", "code_path": "--code", "components": "--components",
}
WORKER_RETRIES = 3  # restarts of an actor, and tries of a task, after a worker died
MAX_TASKS = 10_000
INSTALL_HINT = 'Ray is not installed: pip install "spacy-pytorch-shim[ray]" (installs ray[data])'


class AnnotationError(RuntimeError):
    """A document made the pipeline raise and the run stops (`on_error="fail"`)."""


@dataclass
class WorkerStats:
    pid: int
    load_s: float
    peak_rss_mb: float = 0.0
    shards: int = 0


@dataclass
class AnnotateResult:
    """What a run did. `docs` and `words` count the documents annotated by
    this run (shards kept from an earlier run not included). Times in seconds
    from the start of the run: Ray up, first shard written (start-up: actors
    started, pipelines loaded, one shard annotated), the end."""

    output_dir: Path
    shards_total: int
    shards_kept: int
    docs: int
    words: int
    errors: int
    ray_start_s: float
    first_shard_s: float
    run_s: float
    workers: Dict[int, WorkerStats] = field(default_factory=dict)


class DeathNotes:
    """A Ray actor: for each shard in progress, what its worker was doing
    ("shard", or the index of the one document it was annotating), so that
    the try after the worker died knows."""

    def __init__(self):
        self.notes: Dict[int, Union[str, int]] = {}

    def begin(self, shard: int) -> Optional[Union[str, int]]:
        """Note that `shard` starts; what was noted for it before (a try whose worker died)."""
        before = self.notes.get(shard)
        self.notes[shard] = "shard"
        return before

    def note(self, shard: int, index: int) -> None:
        self.notes[shard] = index

    def end(self, shard: int) -> None:
        self.notes.pop(shard, None)


class ShardAnnotator:
    """The Ray Data callable class: one pipeline per actor, one shard per call."""

    def __init__(
        self,
        pipeline: str,
        text_field: str,
        batch_size: int,
        threads: int,
        use_gpu: bool,
        code_path: Optional[str],
        notes: Any,
    ):
        started = time.perf_counter()
        import spacy
        import torch

        self.notes = notes
        self.text_field = text_field
        self.batch_size = batch_size
        self.fatal: Optional[Tuple[str, str]] = None  # a load failure, reported with each shard
        torch.set_num_threads(threads)
        try:
            if code_path:
                spacy.util.import_file("python_code", code_path)
        except Exception as err:
            self.fatal = ("pipeline", f"{code_path}: cannot be imported in a worker ({one_line(err)})")
        else:
            try:
                if use_gpu:
                    spacy.require_gpu(0)  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
                self.nlp = spacy.load(pipeline)
            except Exception as err:
                self.fatal = ("pipeline", f"{pipeline}: cannot be loaded in a worker ({one_line(err)})")
        self.load_s = time.perf_counter() - started

    def __call__(self, batch: Dict[str, numpy.ndarray]) -> Dict[str, numpy.ndarray]:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        results = [self.annotate(Shard(**{k: _plain(v) for k, v in row.items()})) for row in rows]
        columns = ("shard", "data", "docs", "words", "errors", "fatal_kind", "fatal")
        output = {name: numpy.array([r[i] for r in results], dtype=object) for i, name in enumerate(columns)}
        n = len(results)
        output["pid"] = numpy.full(n, os.getpid())
        output["load_s"] = numpy.full(n, self.load_s)
        output["peak_rss_mb"] = numpy.full(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return output

    def annotate(self, shard: Shard) -> Tuple[int, bytes, int, int, str, str, str]:
        """(shard, DocBin bytes, docs, words, errors as JSON, fatal kind, fatal message)."""
        import json

        import ray
        import srsly
        from spacy.tokens import DocBin
        from spacy.util import minibatch

        if self.fatal:
            return (shard.index, b"", 0, 0, "[]", *self.fatal)
        try:
            records = read_shard(shard, self.text_field, self.nlp.vocab)
        except InputError as err:
            return shard.index, b"", 0, 0, "[]", "input", str(err)
        died = ray.get(self.notes.begin.remote(shard.index))
        if isinstance(died, int):
            record = next(r for r in records if r.index == died)
            error = _error(shard, record, "the worker process died while annotating this document")
            return shard.index, b"", 0, 0, json.dumps([error]), "crash", ""
        # DocBin(store_user_data=True).add packs each doc's user_data with a
        # new msgpack Packer, which looks srsly's encoders up through entry
        # points: 0.6 ms a doc, more than a textcat prediction. One Packer for
        # the shard writes the same bytes.
        doc_bin = DocBin()
        packer = srsly.msgpack.Packer(use_bin_type=True)
        user_data: List[bytes] = []
        errors: List[Dict[str, Any]] = []
        words = 0
        # After a worker died on this shard: one document at a time, each noted.
        batches = minibatch(records, self.batch_size) if died is None else ([r] for r in records)
        for batch in batches:
            if died is not None:
                ray.get(self.notes.note.remote(shard.index, batch[0].index))
            for doc in self._pipe(shard, list(batch), errors):
                words += len(doc)
                doc_bin.add(doc)
                user_data.append(packer.pack(doc.user_data))
        doc_bin.store_user_data = True
        doc_bin.user_data = user_data
        ray.get(self.notes.end.remote(shard.index))
        return shard.index, doc_bin.to_bytes(), len(doc_bin), words, json.dumps(errors), "", ""

    def _pipe(self, shard: Shard, records: List[Record], errors: List[Dict[str, Any]]):
        """The output docs of one batch. When the batch raises, each of its
        documents again on its own, to find the ones that raise."""
        try:
            return self._process([self._make_doc(shard, r) for r in records])
        except Exception:
            pass
        docs = []
        for record in records:
            try:
                docs.extend(self._process([self._make_doc(shard, record)]))
            except Exception as err:
                errors.append(_error(shard, record, f"{type(err).__name__}: {err}"))
        return docs

    def _process(self, docs: List[Any]) -> List[Any]:
        """What a batch of docs becomes in the output: annotated."""
        return list(self.nlp.pipe(docs, batch_size=len(docs)))

    def _make_doc(self, shard: Shard, record: Record):
        doc = self.nlp.make_doc(record.text) if record.doc is None else record.doc.copy()
        doc.user_data["index"] = record.index
        doc.user_data["file"] = shard.path
        doc.user_data["line"] = record.line
        if record.fields:
            doc.user_data["fields"] = record.fields
        return doc


class TargetsAnnotator(ShardAnnotator):
    """The Ray Data callable class of `teacher_targets=True`: each doc
    becomes its tokens and the scored components' outputs, as `spacy
    teacher-targets` stores them; docs without tokens are left out."""

    def __init__(self, *args: Any, components: List[str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not self.fatal:
            from ..teacher_targets import teacher_components

            try:
                self.scored = teacher_components(self.nlp, components)
            except ValueError as err:
                self.fatal = ("pipeline", f"the pipeline in a worker: {err}")

    def _process(self, docs: List[Any]) -> List[Any]:
        from ..teacher_targets import score_docs, stored_doc

        docs = [doc for doc in docs if len(doc)]
        return [stored_doc(doc, outputs) for doc, outputs in zip(docs, score_docs(self.nlp, docs, self.scored))]


def annotate(
    pipeline: Union[str, Path],
    inputs: InputsArg,
    output_dir: Union[str, Path],
    *,
    workers: int = 1,
    shard_size: int = 1000,
    batch_size: int = 64,
    text_field: str = "text",
    on_error: str = "skip",
    address: Optional[str] = None,
    num_gpus: float = 0.0,
    threads_per_worker: int = 1,
    code_path: Optional[Union[str, Path]] = None,
    progress: bool = False,
    teacher_targets: bool = False,
    components: Optional[Sequence[str]] = None,
) -> AnnotateResult:
    """Annotate `inputs` (a `.jsonl`/`.txt`/`.spacy` file, a directory or a
    glob, or a list of those) with `pipeline` (a directory or an installed
    package) into `.spacy` shards in `output_dir`, on `workers` Ray actors.
    With `teacher_targets`, store instead the outputs of the pipeline's torch
    `components` (default: all) as `spacy teacher-targets` does, with its
    teacher.json once every shard is done: a `targets_path` of
    "spacy-pytorch-shim.DistillationCorpus.v1".

    Uses the Ray instance this process is connected to; otherwise joins the
    cluster at `address`, or starts a local instance (and stops what it
    started). Resumes a run in `output_dir` made with the same pipeline and
    input. A document that makes the pipeline raise goes to `errors.jsonl`
    (`on_error="skip"`) or stops the run (`"fail"`, `AnnotationError`).
    """
    for name, value in (("workers", workers), ("shard_size", shard_size), ("batch_size", batch_size),
                        ("threads_per_worker", threads_per_worker)):
        _check(name, value, isinstance(value, int) and not isinstance(value, bool) and value >= 1, "a whole number of at least 1")
    _check("num_gpus", num_gpus, isinstance(num_gpus, (int, float)) and not isinstance(num_gpus, bool)
           and num_gpus >= 0 and (num_gpus <= 1 or (math.isfinite(num_gpus) and num_gpus == int(num_gpus))),
           "a number from 0 to 1, or a whole number")
    _check("on_error", on_error, on_error in ON_ERROR, " or ".join(repr(v) for v in ON_ERROR))
    _check("text_field", text_field, isinstance(text_field, str) and bool(text_field), "a field name (not empty)")
    _check("address", address, address is None or (isinstance(address, str) and bool(address)), "HOST:PORT or 'auto'")
    _check("code_path", code_path, code_path is None or Path(code_path).is_file(), "an existing Python file")
    _check("components", components, components is None or teacher_targets, "none unless teacher_targets (--teacher-targets) is set")
    pipeline_path = resolve_pipeline(pipeline)
    teacher = _teacher(pipeline_path, components, code_path) if teacher_targets else None
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"{output_dir}: exists and is not a directory")
    files = find_input_files(inputs, output_dir)
    header = {
        "pipeline": {"path": str(pipeline_path), "sha256": pipeline_fingerprint(pipeline_path)},
        "input": input_fingerprint(files, shard_size, text_field),
    }
    if teacher is not None:
        header["teacher_targets"] = list(teacher)
    shards = list(plan_shards(files, shard_size, text_field))
    manifest = Manifest.open(output_dir, header)
    pending = [s for s in shards if s.index not in manifest.entries]
    result = AnnotateResult(output_dir, len(shards), len(shards) - len(pending), 0, 0, 0, 0.0, 0.0, 0.0)
    if pending:
        _run(pipeline_path, pending, manifest, result, workers=workers, batch_size=batch_size,
             text_field=text_field, on_error=on_error, address=address, num_gpus=num_gpus,
             threads=threads_per_worker, code_path=code_path, progress=progress,
             total_docs=sum(s.count for s in shards), teacher=teacher)
    manifest.write_errors()
    result.errors = sum(len(entry.errors) for entry in manifest.entries.values())
    if teacher is not None:
        from ..teacher_targets import write_teacher_file

        entries = manifest.entries.values()
        size = sum((output_dir / entry.file).stat().st_size for entry in entries)
        write_teacher_file(output_dir, str(pipeline), teacher, sum(entry.docs for entry in entries), size)
    return result


def _teacher(pipeline_path: Path, components: Optional[Sequence[str]], code_path: Optional[Union[str, Path]]) -> Dict[str, Any]:
    """teacher.json's description of the components whose outputs are
    stored, read from the pipeline before any work (a bad name is an error)."""
    import spacy

    from ..teacher_targets import teacher_components, teacher_description

    if code_path:
        spacy.util.import_file("python_code", str(code_path))
    try:
        nlp = spacy.load(pipeline_path)
    except Exception as err:
        raise PipelineError(f"{pipeline_path}: cannot be loaded ({one_line(err)})") from None
    try:
        return teacher_description(nlp, teacher_components(nlp, None if components is None else list(components)))
    except ValueError as err:
        raise ValueError(f"components (--components): {err}") from None


def _run(
    pipeline_path: Path,
    pending: List[Shard],
    manifest: Manifest,
    result: AnnotateResult,
    *,
    workers: int,
    batch_size: int,
    text_field: str,
    on_error: str,
    address: Optional[str],
    num_gpus: float,
    threads: int,
    code_path: Optional[Union[str, Path]],
    progress: bool,
    total_docs: int,
    teacher: Optional[Dict[str, Any]],
) -> None:
    import json

    try:
        import ray
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    from tqdm import tqdm

    started = time.perf_counter()
    started_ray = not ray.is_initialized()
    if started_ray:
        try:
            if address:
                ray.init(address=address, logging_level="warning")
            else:
                ray.init(include_dashboard=False, logging_level="warning")
        except Exception as err:
            raise AnnotationError(f"{address or 'a local Ray instance'}: Ray could not start ({one_line(err)})") from None
    try:
        result.ray_start_s = time.perf_counter() - started
        _check_resources(ray.cluster_resources(), workers, threads, num_gpus)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        # One block (one task) per shard, up to MAX_TASKS: beyond that, Ray's
        # bookkeeping of the blocks would grow with the corpus, so a task
        # takes several consecutive shards.
        blocks = min(len(pending), MAX_TASKS)
        dataset = ray.data.from_items([s.to_dict() for s in pending], override_num_blocks=blocks)
        dataset = dataset.map_batches(
            ShardAnnotator if teacher is None else TargetsAnnotator,
            fn_constructor_kwargs={
                **({} if teacher is None else {"components": list(teacher)}),
                "pipeline": str(pipeline_path),
                "text_field": text_field,
                "batch_size": batch_size,
                "threads": threads,
                "use_gpu": num_gpus > 0,
                "code_path": str(Path(code_path).resolve()) if code_path else None,
                "notes": ray.remote(num_cpus=0)(DeathNotes).remote(),
            },
            batch_size=1,
            # One shard running and one queued per actor: no idle gap between
            # shards, and no actor holds a backlog while another is idle at the end.
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2),
            num_cpus=threads,
            num_gpus=num_gpus or None,
            max_restarts=WORKER_RETRIES,
            max_task_retries=WORKER_RETRIES,
        )
        by_index = {s.index: s for s in pending}
        done_docs = total_docs - sum(s.count for s in pending)
        with tqdm(total=total_docs, initial=done_docs, unit="doc", disable=not progress, smoothing=0.1) as bar:
            for row in _rows(dataset):
                index = int(row["shard"])
                if index in manifest.entries:
                    continue  # a retried task's second result: the shard is written once
                errors = json.loads(row["errors"])
                _stop_on_fatal(row, errors, manifest)
                if errors and on_error == "fail":
                    first = errors[0]
                    raise AnnotationError(
                        f"{first['file']}:{first['line']}: document {first['index']} made the pipeline "
                        f"raise: {first['error']}"
                    )
                manifest.add(index, row["data"], int(row["docs"]), errors)
                result.docs += int(row["docs"])
                result.words += int(row["words"])
                _update_worker(result.workers, row)
                bar.update(by_index[index].count)
                if not result.first_shard_s:
                    result.first_shard_s = time.perf_counter() - started
        result.run_s = time.perf_counter() - started
    finally:
        if started_ray:
            ray.shutdown()


def _rows(dataset) -> Iterator[Dict[str, Any]]:
    """The dataset's rows; a failure of Ray (a worker that kept dying for
    reasons no document explains, a lost cluster) as one line."""
    rows = iter(dataset.iter_rows())
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as err:
            raise AnnotationError(
                f"the Ray workers failed ({one_line(err)}); the shards written so far are kept: "
                "run the same command again to resume"
            ) from None
        yield row


def _stop_on_fatal(row: Dict[str, Any], errors: List[Dict[str, Any]], manifest: Manifest) -> None:
    """End the run on what a worker reported as fatal: a pipeline it cannot
    load, an input it cannot read, or a document that killed it twice (in
    errors.jsonl, with the errors of the shards written so far)."""
    kind, message = row["fatal_kind"], row["fatal"]
    if kind == "pipeline":
        raise PipelineError(message)
    if kind == "input":
        raise InputError(message)
    if kind == "crash":
        manifest.write_errors(errors)
        error = errors[0]
        raise AnnotationError(
            f"{error['file']}:{error['line']}: document {error['index']} killed its worker twice (a crash in "
            f"the pipeline, or out of memory); it is listed in {manifest.output_dir / ERRORS}. Remove it from "
            "the input (or fix the pipeline) and run the same command again to resume"
        )


def _check(name: str, value: Any, allowed: bool, expected: str) -> None:
    """Refuse a bad argument, naming it as the function and the command do."""
    if not allowed:
        raise ValueError(f"{name} ({OPTIONS[name]}): {value!r} is not allowed; expected {expected}")


def _error(shard: Shard, record: Record, error: str) -> Dict[str, Any]:
    """A line of errors.jsonl."""
    return {"index": record.index, "file": shard.path, "line": record.line, "error": error}


def _check_resources(resources: Dict[str, float], workers: int, threads: int, num_gpus: float) -> None:
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    if workers * threads > cpus:
        raise ValueError(
            f"{workers} workers x {threads} threads need {workers * threads} CPUs; the Ray cluster has {cpus:g}"
        )
    if workers * num_gpus > gpus:
        raise ValueError(f"{workers} workers x {num_gpus:g} GPUs need {workers * num_gpus:g} GPUs; the Ray cluster has {gpus:g}")


def _update_worker(workers: Dict[int, WorkerStats], row: Dict[str, Any]) -> None:
    pid = int(row["pid"])
    stats = workers.setdefault(pid, WorkerStats(pid, float(row["load_s"])))
    stats.peak_rss_mb = max(stats.peak_rss_mb, float(row["peak_rss_mb"]))
    stats.shards += 1


def _plain(value: Any) -> Any:
    """A Python scalar from a numpy one (Shard fields are ints and strings)."""
    return value.item() if isinstance(value, numpy.generic) else value


def read_annotations(output_dir: Union[str, Path], vocab) -> Iterable:
    """The annotated docs of an output directory, in input order."""
    from .inputs import read_doc_bin
    from .manifest import iter_shard_paths

    for path in iter_shard_paths(output_dir):
        yield from read_doc_bin(path).get_docs(vocab)
