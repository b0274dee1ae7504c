"""The gradient sync on 2 real gloo ranks (launched by torch's launcher, with
a timeout) and its no-op outside data-parallel training."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spacy_pytorch_shim.models.torch_shim import TorchShim
from spacy_pytorch_shim.data_parallel import sync

from parallel_helpers import launcher_env

RANKS_SCRIPT = Path(__file__).with_name("sync_ranks.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("sync_ranks")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(RANKS_SCRIPT), str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=launcher_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def _free_port() -> int:
    from spacy_pytorch_shim.cli.train_distributed import free_port

    return free_port("127.0.0.1")


def test_summed_component_gets_the_sum_of_the_ranks_gradients(ranks):
    for seen in ranks:
        assert seen["grads"]["summed"] == [[[3.0] * 3] * 2, [3.0] * 2]


def test_averaged_component_is_weighted_by_each_ranks_share_and_missing_grads_are_zeros(ranks):
    # 0.75 * 1 + 0.25 * 2; the bias had no gradient on rank 1: 0.75 * 1 + 0.
    for seen in ranks:
        assert seen["grads"]["averaged"] == [[[1.25] * 2], [0.75]]


def test_one_all_reduce_per_step_for_all_shims(ranks):
    for seen in ranks:
        assert seen["n_all_reduces"] == [1, 1, 2]


def test_embedding_table_sums_the_rows_touched_on_any_rank(ranks):
    # row 1: rank 0 only (1 + 0); row 5: 5 + 6; row 7: rank 1 only (7 + 1).
    for seen in ranks:
        assert seen["table_rows"] == {"0": [0.0] * 3, "1": [1.0] * 3, "5": [11.0] * 3, "7": [8.0] * 3}
        assert seen["table_untouched_are_zero"]


def test_unregistered_shim_is_an_error(ranks):
    assert "not registered" in ranks[0]["stranger_error"]


def test_broadcast_gives_every_rank_rank_0s_weights(ranks):
    assert ranks[0]["weights"] == ranks[1]["weights"]


def test_inactive_sync_changes_nothing():
    assert not sync.sync_active()
    shim = TorchShim(torch.nn.Linear(2, 2))
    shim.module.weight.grad = torch.ones_like(shim.module.weight)
    grads = [shim.module.weight.grad]
    sync.all_reduce_gradients(shim, grads)
    assert grads[0] is shim.module.weight.grad
    assert torch.equal(grads[0], torch.ones(2, 2))
    assert shim.module.bias.grad is None
