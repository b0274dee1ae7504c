"""Registered callbacks the data-parallel tests import with `--code`."""
from pathlib import Path
from typing import Dict

import spacy
import torch
import torch.distributed as dist


def pipeline_weights(nlp) -> Dict[str, torch.Tensor]:
    """Every torch parameter of the pipeline, by component and shim."""
    weights = {}
    for name, proc in nlp.pipeline:
        for node in proc.model.walk():
            for shim in node.shims:
                for key, value in shim.module.state_dict().items():
                    weights[f"{name}/{node.name}/{key}"] = value.detach().clone()
    return weights


def _rank_name() -> str:
    return f"rank{dist.get_rank()}" if dist.is_initialized() else "single"


@spacy.registry.callbacks("test_parallel.dump_weights.v1")
def dump_weights(directory: str, at_step: int):
    """Save the torch weights of every rank before the first update and after
    `at_step` updates, as DIRECTORY/{rank}-step{step}.pt."""

    def before_update(nlp, info):
        if info["step"] in (0, at_step):
            torch.save(pipeline_weights(nlp), Path(directory) / f"{_rank_name()}-step{info['step']}.pt")

    return before_update


@spacy.registry.callbacks("test_parallel.raise_on_rank.v1")
def raise_on_rank(rank: int, at_step: int):
    def before_update(nlp, info):
        if info["step"] == at_step and _rank_name() == f"rank{rank}":
            raise RuntimeError(f"test failure on rank {rank} at step {at_step}")

    return before_update
