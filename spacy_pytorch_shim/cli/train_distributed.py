"""`spacy train-distributed`: `spacy train` on several processes, GPUs or
machines, started by torch's own launcher (`torch.distributed.run`)."""
import socket
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from spacy.cli._util import Arg, Opt, app
from wasabi import msg

from ..data_parallel.train import DEFAULT_TIMEOUT


@app.command(
    "train-distributed",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def train_distributed_cli(
    # fmt: off
    ctx: typer.Context,  # config overrides, passed on to every rank
    config_path: Path = Arg(..., help="Path to config file", exists=True, dir_okay=False),
    output_path: Optional[Path] = Opt(None, "--output", "--output-path", "-o", help="Output directory to store trained pipeline in (written by rank 0)"),
    code_path: Optional[Path] = Opt(None, "--code", "-c", help="Path to Python file with additional code (registered functions) to be imported on every rank"),
    use_gpu: int = Opt(-1, "--gpu-id", "-g", help="-1 for CPU (gloo); >= 0: every rank uses the GPU of its local rank (NCCL)"),
    nproc_per_node: int = Opt(2, "--nproc-per-node", "-n", help="Ranks (processes) on this machine"),
    nnodes: int = Opt(1, "--nnodes", help="Machines taking part"),
    node_rank: int = Opt(0, "--node-rank", help="This machine's index, 0 to nnodes - 1"),
    master_addr: str = Opt("127.0.0.1", "--master-addr", help="Address of the machine with node rank 0"),
    master_port: int = Opt(0, "--master-port", help="Free port on that machine (0: pick one; one machine only)"),
    timeout: float = Opt(DEFAULT_TIMEOUT, "--timeout", help="Seconds a rank waits for the others before the run fails"),
    # fmt: on
):
    """
    Train a pipeline data-parallel on torch.distributed: every rank runs
    spaCy's training loop on its slice of each global batch and the torch
    gradients are summed across ranks before each update. Takes the options
    of `spacy train` and config overrides like it does, plus torch launcher
    options for the number of processes and machines.
    """
    if master_port == 0:
        if nnodes > 1:
            msg.fail("--master-port is needed with --nnodes > 1 (the same free port on every machine)", exits=1)
        master_port = free_port(master_addr)
    launcher_args = [
        "--nproc-per-node", str(nproc_per_node),
        "--nnodes", str(nnodes),
        "--node-rank", str(node_rank),
        "--master-addr", master_addr,
        "--master-port", str(master_port),
        "--module", "spacy_pytorch_shim.data_parallel.train",
    ]
    rank_args = [str(config_path), "--gpu-id", str(use_gpu), "--timeout", str(timeout)]
    if output_path is not None:
        rank_args += ["--output", str(output_path)]
    if code_path is not None:
        rank_args += ["--code", str(code_path)]
    sys.exit(launch(launcher_args + rank_args + list(ctx.args)))


def launch(argv: List[str]) -> int:
    """Run torch's launcher in this process; the exit status of the run."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(argv))
    except ChildFailedError as err:
        # Which rank failed first is not reliable (whole-second timestamps, and a
        # rank blocked in a collective fails as soon as its peer is gone): all are shown.
        lines = [f"rank {rank} (exit code {failure.exitcode}): {failure_message(failure.message)}" for rank, failure in sorted(err.failures.items())]
        msg.fail("Distributed training failed; torch's launcher stopped every rank")
        print("\n".join(lines))
        return 1
    return 0


def failure_message(message: Any) -> str:
    """The error of a failed rank, from the error file that `@record` writes."""
    if isinstance(message, dict):
        message = message.get("message", "")
    return str(message).strip().splitlines()[-1] if str(message).strip() else "no error message"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
