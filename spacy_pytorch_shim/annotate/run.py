"""Annotate a corpus with a trained pipeline on a Ray cluster (Ray Data).

The driver plans shards (`inputs.plan_shards`), and hands the plan of the
shards not yet done to Ray Data as a dataset of one small row per shard.
`map_batches` runs `ShardAnnotator`, a callable class, on a fixed pool of
actors: each loads the pipeline once in `__init__` (an `nlp` object does not
survive Ray's object store, spaCy #13506), reads its shard from the input
file, runs `nlp.pipe` and returns the shard as `DocBin` bytes. The driver
streams the results back (`iter_rows`), writes each shard and records it in
the manifest. Ray Data limits the shards in flight, so neither the driver nor
a worker ever holds more than a few shards.

Ray restarts an actor whose process dies and runs its task again
(`max_restarts`/`max_task_retries`, Ray Data's defaults for actor pools);
since workers only return data and the driver writes each shard index once,
a retry costs time, not documents.
"""
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy

from .inputs import InputError, InputsArg, Record, Shard, find_input_files, plan_shards, read_shard
from .manifest import Manifest, OutputError, input_fingerprint, pipeline_fingerprint, resolve_pipeline

ON_ERROR = ("skip", "fail")
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
    ):
        started = time.perf_counter()
        import spacy
        import torch
        from spacy.cli._util import import_code

        torch.set_num_threads(threads)
        import_code(code_path)
        if use_gpu:
            spacy.require_gpu(0)  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
        self.nlp = spacy.load(pipeline)
        self.text_field = text_field
        self.batch_size = batch_size
        self.load_s = time.perf_counter() - started

    def __call__(self, batch: Dict[str, numpy.ndarray]) -> Dict[str, numpy.ndarray]:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        results = [self.annotate(Shard(**{k: _plain(v) for k, v in row.items()})) for row in rows]
        columns = ("shard", "data", "docs", "words", "errors")
        output = {name: numpy.array([r[i] for r in results], dtype=object) for i, name in enumerate(columns)}
        n = len(results)
        output["pid"] = numpy.full(n, os.getpid())
        output["load_s"] = numpy.full(n, self.load_s)
        output["peak_rss_mb"] = numpy.full(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return output

    def annotate(self, shard: Shard) -> Tuple[int, bytes, int, int, str]:
        import json

        import srsly
        from spacy.tokens import DocBin
        from spacy.util import minibatch

        records = read_shard(shard, self.text_field, self.nlp.vocab)
        # DocBin(store_user_data=True).add packs each doc's user_data with a
        # new msgpack Packer, which looks srsly's encoders up through entry
        # points: 0.6 ms a doc, more than a textcat prediction. One Packer for
        # the shard writes the same bytes.
        doc_bin = DocBin()
        packer = srsly.msgpack.Packer(use_bin_type=True)
        user_data: List[bytes] = []
        errors: List[Dict[str, Any]] = []
        words = 0
        for batch in minibatch(records, self.batch_size):
            for doc in self._pipe(shard, list(batch), errors):
                words += len(doc)
                doc_bin.add(doc)
                user_data.append(packer.pack(doc.user_data))
        doc_bin.store_user_data = True
        doc_bin.user_data = user_data
        return shard.index, doc_bin.to_bytes(), len(doc_bin), words, json.dumps(errors)

    def _pipe(self, shard: Shard, records: List[Record], errors: List[Dict[str, Any]]):
        """The annotated docs of one batch. When the batch raises, each of its
        documents again on its own, to find the ones that raise."""
        try:
            return list(self.nlp.pipe((self._make_doc(shard, r) for r in records), batch_size=len(records)))
        except Exception:
            pass
        docs = []
        for record in records:
            try:
                docs.append(self.nlp(self._make_doc(shard, record)))
            except Exception as err:
                errors.append(
                    {"index": record.index, "file": shard.path, "line": record.line, "error": f"{type(err).__name__}: {err}"}
                )
        return docs

    def _make_doc(self, shard: Shard, record: Record):
        doc = self.nlp.make_doc(record.text) if record.doc is None else record.doc.copy()
        doc.user_data["index"] = record.index
        doc.user_data["file"] = shard.path
        doc.user_data["line"] = record.line
        if record.fields:
            doc.user_data["fields"] = record.fields
        return doc


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
) -> AnnotateResult:
    """Annotate `inputs` (a `.jsonl`/`.txt`/`.spacy` file, a directory or a
    glob, or a list of those) with `pipeline` (a directory or an installed
    package) into `.spacy` shards in `output_dir`, on `workers` Ray actors.

    Uses the Ray instance this process is connected to; otherwise joins the
    cluster at `address`, or starts a local instance (and stops what it
    started). Resumes a run in `output_dir` made with the same pipeline and
    input. A document that makes the pipeline raise goes to `errors.jsonl`
    (`on_error="skip"`) or stops the run (`"fail"`, `AnnotationError`).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    if workers < 1 or batch_size < 1 or threads_per_worker < 1:
        raise ValueError("workers, batch_size and threads_per_worker must be at least 1")
    pipeline_path = resolve_pipeline(pipeline)
    if code_path is not None and not Path(code_path).is_file():
        raise FileNotFoundError(f"{code_path}: no such code file")
    files = find_input_files(inputs)
    header = {
        "pipeline": {"path": str(pipeline_path), "sha256": pipeline_fingerprint(pipeline_path)},
        "input": input_fingerprint(files, shard_size, text_field),
    }
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"{output_dir}: exists and is not a directory")
    inside = [f for f in files if output_dir.resolve() in f.parents]
    if inside:
        raise InputError(f"{inside[0]}: an input file inside the output directory {output_dir}")
    shards = list(plan_shards(files, shard_size, text_field))
    manifest = Manifest.open(output_dir, header)
    pending = [s for s in shards if s.index not in manifest.entries]
    result = AnnotateResult(output_dir, len(shards), len(shards) - len(pending), 0, 0, 0, 0.0, 0.0, 0.0)
    if pending:
        _run(pipeline_path, pending, manifest, result, workers=workers, batch_size=batch_size,
             text_field=text_field, on_error=on_error, address=address, num_gpus=num_gpus,
             threads=threads_per_worker, code_path=code_path, progress=progress,
             total_docs=sum(s.count for s in shards))
    manifest.write_errors()
    result.errors = sum(len(entry.errors) for entry in manifest.entries.values())
    return result


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
        if address:
            ray.init(address=address, logging_level="warning")
        else:
            ray.init(include_dashboard=False, logging_level="warning")
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
            ShardAnnotator,
            fn_constructor_kwargs={
                "pipeline": str(pipeline_path),
                "text_field": text_field,
                "batch_size": batch_size,
                "threads": threads,
                "use_gpu": num_gpus > 0,
                "code_path": str(Path(code_path).resolve()) if code_path else None,
            },
            batch_size=1,
            # One shard running and one queued per actor: no idle gap between
            # shards, and no actor holds a backlog while another is idle at the end.
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2),
            num_cpus=threads,
            num_gpus=num_gpus or None,
        )
        by_index = {s.index: s for s in pending}
        done_docs = total_docs - sum(s.count for s in pending)
        with tqdm(total=total_docs, initial=done_docs, unit="doc", disable=not progress, smoothing=0.1) as bar:
            for row in dataset.iter_rows():
                index = int(row["shard"])
                if index in manifest.entries:
                    continue  # a retried task's second result: the shard is written once
                errors = json.loads(row["errors"])
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
