"""`python -m spacy teacher-targets TEACHER INPUTS OUTPUT`: a trained
pipeline's outputs on unlabelled text, computed once and stored for
distillation (spacy_pytorch_shim/teacher_targets.py, docs/distillation.md)."""
import shutil
import time
from pathlib import Path
from typing import List, Optional

from spacy.cli._util import Arg, Opt, app, setup_gpu
from wasabi import msg

from ..annotate.inputs import InputError, find_input_files, plan_shards, read_shard
from ..teacher_targets import (
    is_targets_file,
    score_docs,
    shard_path,
    stored_doc,
    teacher_components,
    teacher_description,
    write_shard,
    write_teacher_file,
)
from . import fail


@app.command("teacher-targets")
def teacher_targets_cli(
    # fmt: off
    teacher: str = Arg(..., help="The trained teacher pipeline: a directory or an installed package name"),
    inputs: str = Arg(..., help="Unlabelled text: a .jsonl, .txt (one document per line) or .spacy file, a directory of them, or a glob (quoted)"),
    output: Path = Arg(..., help="New directory for the teacher-scored .spacy shards and teacher.json"),
    components: Optional[str] = Opt(None, "--components", "-c", help="Comma-separated torch components to store the outputs of (default: all)"),
    shard_size: int = Opt(10000, "--shard-size", "-s", help="Documents per output shard"),
    batch_size: int = Opt(64, "--batch-size", "-b", help="Documents per forward pass"),
    text_field: str = Opt("text", "--text-field", "-t", help="Field of a .jsonl record that holds the text"),
    gpu_id: int = Opt(-1, "--gpu-id", "-g", help="GPU ID or -1 for CPU"),
    force: bool = Opt(False, "--force", "-F", help="Replace OUTPUT if it holds an earlier run's targets (teacher.json and targets-*.spacy, nothing else)"),
    # fmt: on
):
    """Run the teacher's torch components over the inputs once and store
    their outputs (float16) with the tokens, one .spacy shard per
    --shard-size documents, for spacy-pytorch-shim.DistillationCorpus.v1."""
    import spacy

    for name, value in (("--shard-size", shard_size), ("--batch-size", batch_size)):
        if value < 1:
            fail(f"{name} {value}: must be at least 1")
    if output.exists() and not output.is_dir():
        fail(f"{output}: is a file; give a new directory")
    replace = output.exists() and any(output.iterdir())
    if replace and not force:
        fail(f"{output}: exists and is not an empty directory; give a new one (or --force to replace earlier targets)")
    if replace:
        others = sorted(p.name for p in output.iterdir() if not is_targets_file(p))
        if others:
            fail(f"{output}: --force replaces earlier targets only, and it holds {', '.join(others[:3])}")
    try:
        files = find_input_files(inputs, output)
    except InputError as err:
        fail(str(err))
    setup_gpu(gpu_id)
    try:
        nlp = spacy.load(teacher)
    except (OSError, ValueError) as err:
        fail(f"{teacher}: cannot be loaded ({err})")
    names: Optional[List[str]] = None
    if components is not None:
        names = [name.strip() for name in components.split(",") if name.strip()]
    try:
        scored = teacher_components(nlp, names)
        # Every input file is read and checked before any work is done.
        shards = list(plan_shards(files, shard_size, text_field))
    except (ValueError, InputError) as err:
        fail(str(err))
    if replace:  # once the inputs and the teacher are known to be good
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    total_docs = total_bytes = skipped = 0
    started = time.perf_counter()
    for shard in shards:
        docs = []
        for record in read_shard(shard, text_field, nlp.vocab):
            doc = record.doc if record.doc is not None else nlp.make_doc(record.text)
            if len(doc):
                docs.append(doc)
            else:
                skipped += 1
        stored = []
        for start in range(0, len(docs), batch_size):
            batch = docs[start : start + batch_size]
            stored.extend(stored_doc(doc, outputs) for doc, outputs in zip(batch, score_docs(nlp, batch, scored)))
        total_bytes += write_shard(shard_path(output, shard.index), stored)
        total_docs += len(stored)
        seconds = time.perf_counter() - started
        msg.text(
            f"shard {shard.index + 1}/{len(shards)}: {total_docs:,} docs scored, "
            f"{_size(total_bytes)}, {total_docs / seconds:,.0f} docs/s"
        )
    write_teacher_file(output, teacher, teacher_description(nlp, scored), total_docs, total_bytes)
    if skipped:
        msg.info(f"{skipped} documents without tokens were left out")
    per_doc = total_bytes / max(total_docs, 1)
    msg.good(
        f"Stored the outputs of {', '.join(scored)} for {total_docs:,} docs in {output}: "
        f"{_size(total_bytes)} ({per_doc:,.0f} bytes per doc)"
    )


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.1f} MB" if n_bytes >= 2**20 else f"{n_bytes / 2**10:,.1f} KB"
