"""`spacy train-distributed` refuses what the ranks would fail on or wait on
in vain before it starts any: one line naming the option, its value and what
is allowed, exit 1, no traceback. The real CLI in a subprocess for the cases
torch's launcher got wrong; the checks themselves in-process."""
import math
import socket
import time

import pytest

from spacy_pytorch_shim.cli.train_distributed import check_launcher_args, failure_message
from spacy_pytorch_shim.data_parallel.train import check_rank_args

from parallel_helpers import ROOT, run_spacy

CONFIG = ROOT / "configs" / "ner.cfg"


def assert_one_line_error(result, *words):
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert any(all(word in line for word in words) for line in output.splitlines()), output
    return output


@pytest.mark.parametrize("args,words", [
    (["--nproc-per-node", "0"], ["--nproc-per-node 0: must be >= 1"]),
    (["--nproc-per-node", "-1"], ["--nproc-per-node -1: must be >= 1"]),
    (["--nnodes", "2", "--node-rank", "2", "--master-port", "29500"], ["--node-rank 2: must be 0 to 1", "--nnodes 2"]),
    (["--trainingx.max_steps", "5"], ["trainingx -> max_steps", "not a section value that can be overridden"]),
])
def test_cli_refuses_before_launching(args, words):
    output = assert_one_line_error(run_spacy(["train-distributed", CONFIG, *args], check=False, timeout=60), *words)
    assert "Distributed training failed" not in output  # no rank started


def test_cli_refuses_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_spacy(["train-distributed", CONFIG, "--master-port", port], check=False, timeout=60)
    assert_one_line_error(result, f"--master-port {port}: in use on this machine")


def test_a_missing_node_rank_0_ends_the_run_after_timeout():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    result = run_spacy(["train-distributed", CONFIG, "--nnodes", "2", "--node-rank", "1", "--master-port", port,
                        "--timeout", "2"], check=False, timeout=90)
    assert time.monotonic() - start < 60
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "The ranks could not meet at --master-addr/--master-port" in result.stdout


@pytest.mark.parametrize("kwargs,message", [
    ({"nnodes": 0}, "--nnodes 0: must be >= 1"),
    ({"node_rank": -1}, "--node-rank -1: must be 0 to 0"),
    ({"master_port": 65536}, "--master-port 65536: must be a port, 1 to 65535"),
    ({"master_port": -1}, "--master-port -1: must be a port"),
    ({"nnodes": 2, "master_port": 0}, "--master-port 0: picks a port on one machine only"),
    ({"master_addr": "no-such-host.invalid"}, "--master-addr 'no-such-host.invalid': not a known address"),
    ({"master_addr": ""}, "--master-addr '': not a known address"),
])
def test_launcher_args(kwargs, message):
    args = {"nproc_per_node": 2, "nnodes": 1, "node_rank": 0, "master_addr": "127.0.0.1", "master_port": 0, **kwargs}
    with pytest.raises(ValueError, match=f"^{message}"):
        check_launcher_args(**args)


def test_port_0_picks_a_free_port_and_other_nodes_do_not_probe():
    assert check_launcher_args(1, 1, 0, "127.0.0.1", 0) > 0
    assert check_launcher_args(1, 2, 1, "127.0.0.1", 29500) == 29500


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, 86401])
def test_timeout_is_a_bound(timeout):
    with pytest.raises(ValueError, match=rf"^--timeout {timeout}: must be a number of seconds > 0 and <= 86400"):
        check_rank_args(None, -1, timeout, 1)


def test_gpu_id():
    with pytest.raises(ValueError, match=r"^--gpu-id -2: must be -1 \(CPU\) or >= 0"):
        check_rank_args(None, -2, 10, 1)
    import torch

    n_gpus = torch.cuda.device_count()
    with pytest.raises(ValueError, match=rf"^--gpu-id 0: .* {n_gpus + 1} ranks need {n_gpus + 1} GPUs, and {n_gpus} are visible"):
        check_rank_args(None, 0, 10, n_gpus + 1)


def test_output_is_a_directory_without_an_earlier_pipeline(tmp_path):
    check_rank_args(tmp_path / "new" / "dir", -1, 10, 1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="file: is a file; give a directory"):
        check_rank_args(tmp_path / "file", -1, 10, 1)
    with pytest.raises(ValueError, match="is not a directory this user can write to"):
        check_rank_args(tmp_path / "file" / "out", -1, 10, 1)
    (tmp_path / "run" / "model-best").mkdir(parents=True)
    with pytest.raises(ValueError, match="run: holds model-best of an earlier run, which training would replace"):
        check_rank_args(tmp_path / "run", -1, 10, 1)


def test_a_rank_that_exits_with_a_message_is_pointed_to(tmp_path):
    """spaCy's config errors exit the rank after printing; no error file."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    failure = ProcessFailure(local_rank=0, pid=1, exitcode=1, error_file=str(tmp_path / "error.json"))
    assert failure_message(failure) == "its error is printed above"
