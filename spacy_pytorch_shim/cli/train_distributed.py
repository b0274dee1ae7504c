"""`spacy train-distributed`: `spacy train` on several processes, GPUs or
machines, started by torch's own launcher (`torch.distributed.run`)."""
import errno
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from spacy import util
from spacy.cli._util import Arg, Opt, app, import_code, parse_config_overrides, show_validation_error
from wasabi import msg

from ..data_parallel.train import DEFAULT_TIMEOUT, check_rank_args
from . import fail


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
    try:
        master_port = check_launcher_args(nproc_per_node, nnodes, node_rank, master_addr, master_port)
        check_rank_args(output_path if node_rank == 0 else None, use_gpu, timeout, nproc_per_node)
    except ValueError as err:
        fail(str(err))
    # What every rank would fail on, once here: the code, the config and its overrides.
    import_code(code_path)
    with show_validation_error(config_path):
        util.load_config(config_path, overrides=parse_config_overrides(list(ctx.args)), interpolate=False)
    launcher_args = [
        "--nproc-per-node", str(nproc_per_node),
        "--nnodes", str(nnodes),
        "--node-rank", str(node_rank),
        "--master-addr", master_addr,
        "--master-port", str(master_port),
        # The rendezvous waits for the other machines at most --timeout.
        "--rdzv-conf", f"timeout={math.ceil(timeout)}",
        "--module", "spacy_pytorch_shim.data_parallel.train",
    ]
    rank_args = [str(config_path), "--gpu-id", str(use_gpu), "--timeout", str(timeout)]
    if output_path is not None:
        rank_args += ["--output", str(output_path)]
    if code_path is not None:
        rank_args += ["--code", str(code_path)]
    sys.exit(launch(launcher_args + rank_args + list(ctx.args)))


def check_launcher_args(nproc_per_node: int, nnodes: int, node_rank: int, master_addr: str, master_port: int) -> int:
    """The port to use, after refusing what torch's launcher would fail on
    with a traceback or wait on in vain: a ValueError whose one line names
    the option, its value and what is allowed. On node rank 0, which hosts
    the rendezvous, the port must be free."""
    if nproc_per_node < 1:
        raise ValueError(f"--nproc-per-node {nproc_per_node}: must be >= 1 (ranks on this machine)")
    if nnodes < 1:
        raise ValueError(f"--nnodes {nnodes}: must be >= 1 (machines taking part)")
    if not 0 <= node_rank < nnodes:
        raise ValueError(f"--node-rank {node_rank}: must be 0 to {nnodes - 1}, this machine's index among --nnodes {nnodes}")
    if not 0 <= master_port <= 65535:
        raise ValueError(f"--master-port {master_port}: must be a port, 1 to 65535 (0: pick a free one, one machine only)")
    if master_port == 0 and nnodes > 1:
        raise ValueError(f"--master-port 0: picks a port on one machine only; with --nnodes {nnodes} give the same free port on every machine")
    try:
        socket.getaddrinfo(master_addr, None)
    except (socket.gaierror, UnicodeError) as err:
        raise ValueError(f"--master-addr {master_addr!r}: not a known address or host name ({err})") from None
    if node_rank != 0:
        return master_port
    try:
        # The rendezvous listens on every address of this machine; 0 picks a port on master_addr.
        return free_port(master_addr if master_port == 0 else "", master_port)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ValueError(f"--master-port {master_port}: in use on this machine; give a free port, or 0 to pick one (one machine only)") from None
        raise ValueError(f"--master-addr {master_addr} --master-port {master_port}: cannot listen there ({err.strerror})") from None


def launch(argv: List[str]) -> int:
    """Run torch's launcher in this process; the exit status of the run."""
    from torch.distributed import DistError
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(argv))
    except (DistError, RendezvousError) as err:
        # The rendezvous failed: a port taken meanwhile, or no node rank 0 within --timeout.
        fail(f"The ranks could not meet at --master-addr/--master-port: {first_line(err)}")
    except ChildFailedError as err:
        # Which rank failed first is not reliable (whole-second timestamps, and a
        # rank blocked in a collective fails as soon as its peer is gone): all are shown.
        lines = [f"rank {rank} (exit code {failure.exitcode}): {failure_message(failure)}" for rank, failure in sorted(err.failures.items())]
        msg.fail("Distributed training failed; torch's launcher stopped every rank")
        print("\n".join(lines))
        return 1
    return 0


def failure_message(failure: Any) -> str:
    """The error of a failed rank, from the error file that `@record` writes
    for an exception; a rank that exited (spaCy's `msg.fail`) printed its own."""
    if failure.exitcode > 0 and not os.path.isfile(failure.error_file):
        return "its error is printed above"
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", "")
    return str(message).strip().splitlines()[-1] if str(message).strip() else "no error message"


def first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def free_port(host: str, port: int = 0) -> int:
    """`port` on `host` if nothing listens there (OSError otherwise); with 0,
    a free port that the system picks."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the rendezvous does
        sock.bind((host, port))
        return sock.getsockname()[1]
