"""`python -m spacy ray-annotate`: registered on spaCy's CLI through the
`spacy_cli` entry point group (setup.cfg). Importing this module does not
import Ray; a missing `ray` extra is reported when the command runs."""
from pathlib import Path
from typing import Optional

import typer
from spacy.cli._util import Arg, Opt, app
from wasabi import msg

from ..annotate.run import INSTALL_HINT, AnnotationError, annotate
from ..annotate.manifest import ERRORS, MANIFEST
from ..teacher_targets import TEACHER_FILE
from . import fail


@app.command("ray-annotate")
def ray_annotate_cli(
    # fmt: off
    pipeline: str = Arg(..., help="Pipeline: a directory or an installed package name (on every node)"),
    inputs: str = Arg(..., help="A .jsonl, .txt (one document per line) or .spacy file, a directory of them, or a glob (quoted)"),
    output_dir: Path = Arg(..., help="Output directory: .spacy shards, manifest.jsonl, errors.jsonl; rerun to resume"),
    workers: int = Opt(1, "--workers", "-w", help="Number of Ray actors, each with its own copy of the pipeline"),
    address: Optional[str] = Opt(None, "--address", "-a", help="Ray cluster to join (e.g. 10.0.0.1:6379, or 'auto'); default: start a local Ray instance"),
    shard_size: int = Opt(1000, "--shard-size", "-s", help="Documents per output shard (one Ray task)"),
    batch_size: int = Opt(64, "--batch-size", "-b", help="Documents per nlp.pipe batch in a worker"),
    text_field: str = Opt("text", "--text-field", "-t", help="Field of a .jsonl record that holds the text"),
    on_error: str = Opt("skip", "--on-error", "-e", help="A document that makes the pipeline raise: 'skip' (to errors.jsonl) or 'fail' (stop)"),
    gpus_per_worker: float = Opt(0.0, "--gpus-per-worker", "-G", help="GPUs per actor (e.g. 1, or 0.5 to share); 0 for CPU"),
    threads_per_worker: int = Opt(1, "--threads-per-worker", "-T", help="torch threads (and Ray CPUs) per actor"),
    code_path: Optional[Path] = Opt(None, "--code", "-c", help="Python file with additional code (registered functions), imported in every worker"),
    progress: bool = Opt(True, "--progress/--no-progress", help="Show a progress bar"),
    teacher_targets: bool = Opt(False, "--teacher-targets", help="Store the outputs of the pipeline's torch components for distillation instead of annotations, as `spacy teacher-targets` does (docs/distillation.md)"),
    components: Optional[str] = Opt(None, "--components", help="With --teacher-targets: comma-separated torch components to store the outputs of (default: all)"),
    # fmt: on
):
    """Annotate a corpus with a trained pipeline on Ray workers into .spacy
    shards, exactly once and in input order; or, with --teacher-targets,
    store a teacher's outputs for distillation. Rerun the same command to
    resume an interrupted run. See docs/ray.md."""
    try:
        import ray  # noqa: F401
    except ImportError:
        fail(INSTALL_HINT)
    try:
        result = annotate(
            pipeline,
            inputs,
            output_dir,
            workers=workers,
            shard_size=shard_size,
            batch_size=batch_size,
            text_field=text_field,
            on_error=on_error,
            address=address,
            num_gpus=gpus_per_worker,
            threads_per_worker=threads_per_worker,
            code_path=code_path,
            progress=progress,
            teacher_targets=teacher_targets,
            components=None if components is None else [name.strip() for name in components.split(",") if name.strip()],
        )
    except (ValueError, AnnotationError, OSError) as err:
        # Every error the user can cause, as one line: a bad argument, input,
        # pipeline or output directory (ValueErrors), a failed run, a file
        # that cannot be read or written (an OSError names it).
        fail(str(err))
    except KeyboardInterrupt:
        msg.warn(f"Interrupted: the shards recorded in {output_dir / MANIFEST} are kept; run the same command again to resume")
        raise typer.Exit(130)
    if result.shards_kept:
        msg.info(f"Resumed: {result.shards_kept} of {result.shards_total} shards were already done")
    if result.docs:
        seconds = result.run_s
        msg.good(
            f"Annotated {result.docs} documents ({result.words} words) in {seconds:.1f}s: "
            f"{result.docs / seconds:.0f} docs/s, {result.words / seconds:.0f} words/s "
            f"(start-up: Ray {result.ray_start_s:.1f}s, first shard done at {result.first_shard_s:.1f}s)"
        )
    for stats in result.workers.values():
        msg.text(f"worker pid {stats.pid}: pipeline loaded in {stats.load_s:.1f}s, {stats.shards} shards, peak RSS {stats.peak_rss_mb:.0f} MB")
    if result.errors:
        msg.warn(f"{result.errors} documents made the pipeline raise: see {output_dir / ERRORS}")
    msg.good(f"{result.shards_total} shards in {output_dir} (index: {output_dir / MANIFEST})")
    if teacher_targets:
        msg.good(f"Teacher outputs for distillation: {output_dir / TEACHER_FILE} written; use {output_dir} as a targets_path")
