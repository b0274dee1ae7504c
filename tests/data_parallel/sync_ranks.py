"""Run by torch's launcher on 2 ranks (test_sync.py): the gradient sync and
the start-up broadcast on real gloo process groups. Each rank writes what it
saw to DIR/rank{r}.json."""
import json
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from spacy_pytorch_shim.models.torch_shim import TorchShim
from spacy_pytorch_shim.data_parallel import sync


def main(out: Path) -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    rank = dist.get_rank()
    torch.manual_seed(rank)  # different weights on each rank until the broadcast
    summed = TorchShim(torch.nn.Linear(3, 2))
    averaged = TorchShim(torch.nn.Linear(2, 1))
    with sync.gradient_sync([(summed, "sum"), (averaged, "mean")]) as state:
        for param in summed.module.parameters():
            param.grad = torch.full_like(param, rank + 1.0)
        averaged.module.weight.grad = torch.full_like(averaged.module.weight, rank + 1.0)
        if rank == 1:
            averaged.module.bias.grad = None  # no gradient on this rank
        else:
            averaged.module.bias.grad = torch.full_like(averaged.module.bias, 1.0)
        sync.set_local_share(0.75 if rank == 0 else 0.25)
        sync.all_reduce_gradients(summed, sync.gradients_to_sync(summed.module))
        after_first = state.n_all_reduces
        sync.all_reduce_gradients(averaged, sync.gradients_to_sync(averaged.module))
        after_second = state.n_all_reduces
        grads = {
            "summed": [p.grad.tolist() for p in summed.module.parameters()],
            "averaged": [p.grad.tolist() for p in averaged.module.parameters()],
        }
        # The next step starts with the next call of a shim already done.
        sync.all_reduce_gradients(summed, sync.gradients_to_sync(summed.module))
        after_next_step = state.n_all_reduces
        stranger = TorchShim(torch.nn.Linear(1, 1))
        try:
            sync.all_reduce_gradients(stranger, sync.gradients_to_sync(stranger.module))
            stranger_error = ""
        except RuntimeError as err:
            stranger_error = str(err)
    # An embedding table: only rows 1 and 5 (rank 0) and 5 and 7 (rank 1) are touched.
    table = TorchShim(torch.nn.Embedding(sync.SPARSE_MIN_ROWS, 3))
    with sync.gradient_sync([(table, "sum")]):
        grad = torch.zeros_like(table.module.weight)
        for row in ((1, 5) if rank == 0 else (5, 7)):
            grad[row] = float(row + rank)
        table.module.weight.grad = grad
        sync.all_reduce_gradients(table, sync.gradients_to_sync(table.module))
        touched = {str(row): table.module.weight.grad[row].tolist() for row in (0, 1, 5, 7)}
        untouched_are_zero = bool(table.module.weight.grad[[0, 2, 3, 4, 6, 8]].eq(0).all())
    sync.broadcast_parameters([summed, averaged])
    weights = [p.tolist() for shim in (summed, averaged) for p in shim.module.parameters()]
    (out / f"rank{rank}.json").write_text(json.dumps({
        "n_all_reduces": [after_first, after_second, after_next_step],
        "grads": grads,
        "stranger_error": stranger_error,
        "table_rows": touched,
        "table_untouched_are_zero": untouched_are_zero,
        "weights": weights,
    }))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
