"""One rank of a data-parallel `spacy train`, run by torch's launcher:

    python -m torch.distributed.run --nproc-per-node 2 \\
        -m spacy_pytorch_shim.data_parallel.train CONFIG --output DIR [--paths.train ...]

(`spacy train-distributed` builds that command.) Every rank runs spaCy's own
training loop (`spacy.training.loop.train`) on the same config and seed, so
all ranks read the same global batches; each keeps its disjoint slice
`batch[rank::world_size]` and the shims sum their gradients across the ranks
before each update (`sync.all_reduce_gradients`). The weights, the optimizer
state and its averages therefore stay identical on all ranks. Every rank
evaluates the dev set and takes rank 0's scores, so `model-best`, patience
and `max_steps` are decided alike everywhere; only rank 0 writes the output
directory and the progress table.
"""
import argparse
import contextlib
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from spacy import util
from spacy.cli._util import import_code, parse_config_overrides, setup_gpu, show_validation_error
from spacy.language import Language
from spacy.pipeline import Tok2Vec
from spacy.training import loop
from spacy.training.initialize import init_nlp
from thinc.api import Config
from torch.distributed.elastic.multiprocessing.errors import record
from wasabi import msg

from ..models.torch_shim import TorchShim
from . import sync

DEFAULT_TIMEOUT = 600  # seconds a rank waits for the others: at the start and in each collective call
MAX_TIMEOUT = 24 * 3600  # every wait has a bound


def check_rank_args(output_path: Optional[Path], use_gpu: int, timeout: float, n_local_ranks: int) -> None:
    """Refuse, before any rank waits for another, the options every rank would
    fail on (or wait on without end): a ValueError whose one line names the
    option, its value and what is allowed. Also refuses an output directory
    holding an earlier run's pipeline, which training would delete."""
    if not (0 < timeout <= MAX_TIMEOUT):  # False for NaN
        raise ValueError(f"--timeout {timeout}: must be a number of seconds > 0 and <= {MAX_TIMEOUT}")
    if use_gpu < -1:
        raise ValueError(f"--gpu-id {use_gpu}: must be -1 (CPU) or >= 0 (rank i of a machine uses GPU i)")
    if use_gpu >= 0 and torch.cuda.device_count() < n_local_ranks:
        raise ValueError(
            f"--gpu-id {use_gpu}: rank i of a machine uses GPU i, so {n_local_ranks} ranks need {n_local_ranks} "
            f"GPUs, and {torch.cuda.device_count()} are visible; use --gpu-id -1 for the CPU"
        )
    if output_path is not None:
        if output_path.exists() and not output_path.is_dir():
            raise ValueError(f"--output {output_path}: is a file; give a directory")
        earlier = [name for name in (loop.DIR_MODEL_BEST, loop.DIR_MODEL_LAST) if (output_path / name).exists()]
        if earlier:
            raise ValueError(
                f"--output {output_path}: holds {' and '.join(earlier)} of an earlier run, which training "
                f"would replace; give another directory or remove them"
            )
        existing = next(parent for parent in [output_path, *output_path.absolute().parents] if parent.exists())
        if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
            raise ValueError(f"--output {output_path}: {existing} is not a directory this user can write to")

def loss_reduction(nlp: Language, name: str) -> str:
    """"sum" or "mean": a component's `loss_reduction` attribute (our
    components declare theirs: "sum" of the gradients of a global batch's
    parts, or "mean" over its examples), else (a `tok2vec` component) that of
    the components listening to it."""
    proc = nlp.get_pipe(name)
    declared = getattr(proc, "loss_reduction", None)
    if declared is not None:
        if declared not in sync.LOSS_REDUCTIONS:
            raise ValueError(f"Component '{name}': loss_reduction must be one of {sync.LOSS_REDUCTIONS}, got {declared!r}")
        return declared
    if isinstance(proc, Tok2Vec):
        reductions = {loss_reduction(nlp, listener) for listener in proc.listening_components}
        if len(reductions) == 1:
            return reductions.pop()
        raise ValueError(
            f"Component '{name}' (tok2vec) is listened to by {proc.listening_components}, whose "
            f"losses reduce differently ({sorted(reductions)}) or by none: data-parallel training "
            f"cannot weight its gradient. Give each listener its own tok2vec."
        )
    raise ValueError(
        f"Component '{name}' ({type(proc).__name__}) holds torch parameters, but data-parallel "
        f"training does not know how its loss reduces over a batch. Set its attribute "
        f"`loss_reduction` to \"sum\" (loss summed over the batch) or \"mean\" (averaged over "
        f"the batch's examples), e.g. in an [nlp] after_pipeline_creation callback."
    )


def data_parallel_shims(nlp: Language, frozen: Sequence[str] = ()) -> List[Tuple[TorchShim, str]]:
    """The torch shims of the components that training updates, each with its
    component's loss reduction, in pipeline order. Refuses a component that
    also holds Thinc-native parameters, which the ranks do not synchronise."""
    trained = [
        (name, proc)
        for name, proc in nlp.pipeline
        if name not in frozen and getattr(proc, "is_trainable", False) and proc.model not in (True, False, None)
    ]
    for name, proc in trained:
        native = sorted({f"{node.name}.{param}" for node in proc.model.walk() for param in node.param_names})
        others = sorted({type(shim).__name__ for node in proc.model.walk() for shim in node.shims if not isinstance(shim, TorchShim)})
        if native or others:
            what = ", ".join(native[:6] + (["..."] if len(native) > 6 else []) + others)
            raise ValueError(
                f"Component '{name}' ({type(proc).__name__}) has trainable parameters outside "
                f"spacy-pytorch-shim's torch modules ({what}), which data-parallel training does "
                f"not synchronise across ranks. Use a torch model for it (e.g. "
                f"spacy-pytorch-shim.TorchTok2Vec.v1, torch_ner) or list it in "
                f"[training] frozen_components."
            )
    shims: List[Tuple[TorchShim, str]] = []
    seen = set()
    for name, proc in trained:
        own = [shim for node in proc.model.walk() for shim in node.shims if shim.id not in seen]
        if own:
            reduction = loss_reduction(nlp, name)
            for shim in own:
                seen.add(shim.id)
                shims.append((shim, reduction))
    if not shims:
        raise ValueError("No component of the pipeline has torch parameters to train")
    return shims


def rank_batches(create_train_batches: Callable, rank: int, world_size: int) -> Callable:
    """spaCy's `create_train_batches` with each global batch cut to this
    rank's slice; tells the gradient sync this rank's share of it."""

    def create_rank_batches(nlp, corpus, batcher, max_epochs) -> Iterator[Tuple[int, List[Any]]]:
        for epoch, batch in create_train_batches(nlp, corpus, batcher, max_epochs):
            batch = list(batch)
            local = batch[rank::world_size]
            sync.set_local_share(len(local) / max(len(batch), 1))
            yield epoch, local

    return create_rank_batches


def agreed_evaluation(create_evaluation_callback: Callable) -> Callable:
    """spaCy's evaluation callback that returns rank 0's scores on every rank,
    so that `model-best`, patience and stopping are decided alike."""

    def create_agreed_callback(nlp, dev_corpus, weights) -> Callable[[], Tuple[float, Dict[str, Any]]]:
        evaluate = create_evaluation_callback(nlp, dev_corpus, weights)

        def evaluate_everywhere() -> Tuple[float, Dict[str, Any]]:
            result = list(evaluate())
            dist.broadcast_object_list(result, src=0)
            return result[0], result[1]

        return evaluate_everywhere

    return create_agreed_callback


@contextlib.contextmanager
def data_parallel_loop(rank: int, world_size: int) -> Iterator[None]:
    """spaCy's training loop with rank-sliced batches and agreed evaluation."""
    originals = (loop.create_train_batches, loop.create_evaluation_callback)
    loop.create_train_batches = rank_batches(originals[0], rank, world_size)
    loop.create_evaluation_callback = agreed_evaluation(originals[1])
    try:
        yield
    finally:
        loop.create_train_batches, loop.create_evaluation_callback = originals


def train_rank(
    config_path: Path,
    output_path: Optional[Path] = None,
    *,
    overrides: Dict[str, Any] = util.SimpleFrozenDict(),
    use_gpu: int = -1,
    timeout: float = DEFAULT_TIMEOUT,
) -> Language:
    """Train as one rank of the process group that torch's launcher describes
    in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).
    With `use_gpu >= 0` each rank uses the GPU of its local rank (NCCL),
    else the CPU (gloo). Returns the trained pipeline (averaged weights)."""
    missing = [var for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if var not in os.environ]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not set: run this through `spacy train-distributed` or "
            f"`python -m torch.distributed.run ... -m spacy_pytorch_shim.data_parallel.train`"
        )
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if use_gpu >= 0:
        setup_gpu(local_rank, silent=rank != 0)
        torch.cuda.set_device(local_rank)
        use_gpu = local_rank
    backend = "nccl" if use_gpu >= 0 else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    try:
        return _train(config_path, output_path if rank == 0 else None, overrides, use_gpu, rank, world_size)
    finally:
        dist.destroy_process_group()


def _train(config_path: Path, output_path: Optional[Path], overrides: Dict[str, Any], use_gpu: int, rank: int, world_size: int) -> Language:
    is_writer = rank == 0
    if output_path is not None and not output_path.exists():
        output_path.mkdir(parents=True)
    with show_validation_error(config_path):
        config = util.load_config(config_path, overrides=overrides, interpolate=False)
    if is_writer:
        msg.divider("Initializing pipeline")
    with show_validation_error(config_path, hint_fill=False):
        nlp = init_nlp(config, use_gpu=use_gpu)
    frozen = Config(nlp.config).interpolate()["training"]["frozen_components"]
    shims = data_parallel_shims(nlp, frozen)
    sync.broadcast_parameters([shim for shim, _ in shims])
    if is_writer:
        msg.good(f"Initialized pipeline on {world_size} ranks ({dist.get_backend()})")
        msg.divider("Training pipeline")
        stdout, stderr = sys.stdout, sys.stderr
    else:
        # No output and no logging service (a logger may be a remote tracker).
        nlp.config["training"]["logger"] = {"@loggers": "spacy.ConsoleLogger.v1", "progress_bar": False}
        stdout = stderr = open(os.devnull, "w")
    with sync.gradient_sync(shims), data_parallel_loop(rank, world_size):
        nlp, _ = loop.train(nlp, output_path, use_gpu=use_gpu, stdout=stdout, stderr=stderr)
    return nlp


@record
def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spacy_pytorch_shim.data_parallel.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("config_path", type=Path)
    parser.add_argument("--output", "--output-path", "-o", dest="output_path", type=Path, default=None)
    parser.add_argument("--code", "-c", dest="code_path", type=Path, default=None)
    parser.add_argument("--gpu-id", "-g", dest="use_gpu", type=int, default=-1, help=">= 0: each rank uses the GPU of its local rank")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds a rank waits for the others")
    args, extra = parser.parse_known_args(argv)
    try:
        # Only rank 0 writes the output directory.
        output = args.output_path if os.environ.get("RANK") == "0" else None
        check_rank_args(output, args.use_gpu, args.timeout, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    except ValueError as err:
        msg.fail(str(err), exits=1)
    import_code(args.code_path)
    train_rank(
        args.config_path,
        args.output_path,
        overrides=parse_config_overrides(extra),
        use_gpu=args.use_gpu,
        timeout=args.timeout,
    )


if __name__ == "__main__":
    main()
