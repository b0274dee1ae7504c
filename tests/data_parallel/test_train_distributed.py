"""`spacy train-distributed` end to end on 2 gloo ranks, in subprocesses
with timeouts: identical weights on both ranks after K steps, equal to a
one-process `spacy train` on the same global batches (an even-sum loss,
torch_ner, and a per-example mean with uneven splits, torch_textcat),
model-best saved with the averaged weights and scored by `spacy evaluate`,
a rank that raises ends the run with an error, and components with
Thinc-native parameters are refused."""
import re
from pathlib import Path
from typing import Dict

import pytest
import spacy
import torch
from spacy.tokens import DocBin
from thinc.api import Config

from spacy_pytorch_shim.data_parallel.train import data_parallel_shims, loss_reduction

from parallel_helpers import CALLBACKS, ROOT, assert_close, pipeline_weights, run_spacy

pytestmark = pytest.mark.slow

K = 6  # updates before the weights are compared
RTOL = 1e-5
N_DOCS = {"train": 40, "dev": 20, "test": 20}


def tiny(sample: str, out: Path) -> Dict[str, Path]:
    nlp = spacy.blank("en")
    paths = {}
    for split, n in N_DOCS.items():
        docs = list(DocBin().from_disk(ROOT / "data" / sample / f"{split}.spacy").get_docs(nlp.vocab))[:n]
        paths[split] = out / f"{sample}-{split}.spacy"
        DocBin(docs=docs).to_disk(paths[split])
    return paths


def equality_config(name: str, out: Path, dump_dir: Path, batch_size: int = 0) -> Path:
    """A shipped config with dropout 0 (masks are drawn per rank; the .v2
    architectures take every rate from [training] dropout), the weights
    dumped after K updates, and optionally a fixed number of examples per
    batch."""
    config = Config().from_disk(ROOT / "configs" / f"{name}.cfg", interpolate=False)
    config["training"]["dropout"] = 0.0
    config["training"]["before_update"] = {"@callbacks": "test_parallel.dump_weights.v1", "directory": str(dump_dir), "at_step": K}
    config["training"]["max_steps"] = K
    config["training"]["eval_frequency"] = 3
    if batch_size:
        config["training"]["batcher"] = {"@batchers": "spacy.batch_by_sequence.v1", "size": batch_size, "get_length": None}
    path = out / f"{name}-equality.cfg"
    config.to_disk(path)
    return path


def train_both(config: Path, data: Dict[str, Path], out: Path):
    """The 2-rank run and the one-process reference; their outputs."""
    common = ["--paths.train", data["train"], "--paths.dev", data["dev"], "--code", CALLBACKS]
    two = run_spacy(["train-distributed", config, "--output", out / "two", "--nproc-per-node", "2", *common])
    one = run_spacy(["train", config, "--output", out / "one", *common])
    return two, one


@pytest.fixture(scope="module")
def ner_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ner_runs")
    data = tiny("btc-sample", out)
    config = equality_config("ner", out, out)
    two, one = train_both(config, data, out)
    return out, data, two, one


def test_ranks_hold_identical_weights_after_k_steps(ner_runs):
    out = ner_runs[0]
    for step in (0, K):
        rank0, rank1 = torch.load(out / f"rank0-step{step}.pt"), torch.load(out / f"rank1-step{step}.pt")
        assert rank0.keys() == rank1.keys() and rank0
        for key in rank0:
            assert torch.equal(rank0[key], rank1[key]), (step, key)


def test_two_ranks_equal_one_process_on_the_same_global_batches(ner_runs):
    out = ner_runs[0]
    single, start = torch.load(out / f"single-step{K}.pt"), torch.load(out / "single-step0.pt")
    assert_close(torch.load(out / f"rank0-step{K}.pt"), single, RTOL)
    # The weights moved well beyond the tolerance in K steps.
    assert all(not torch.allclose(single[key], start[key], rtol=100 * RTOL) for key in single if key.endswith("weight"))


def test_model_best_holds_the_averaged_weights_of_the_one_process_run(ner_runs):
    out = ner_runs[0]
    assert_close(
        pipeline_weights(spacy.load(out / "two" / "model-best")),
        pipeline_weights(spacy.load(out / "one" / "model-best")),
        RTOL,
    )


def test_only_rank_0_prints_the_progress_table(ner_runs):
    two = ner_runs[2]
    assert two.stdout.count("Pipeline: ['torch_ner']") == 1
    assert re.search(r"ENTS_F", two.stdout)


def test_spacy_evaluate_scores_model_best(ner_runs):
    out, data = ner_runs[0], ner_runs[1]
    result = run_spacy(["evaluate", out / "two" / "model-best", data["test"], "--output", out / "scores.json"])
    assert "NER F" in result.stdout
    assert (out / "scores.json").exists()


def test_uneven_splits_of_a_per_example_mean_loss_equal_one_process(tmp_path):
    """Batches of 7 examples (4 + 3 per rank; 5 at the epoch's end): textcat's
    loss is a mean over the rank's examples, weighted by the rank's share."""
    data = tiny("banking77-sample", tmp_path)
    config = equality_config("textcat", tmp_path, tmp_path, batch_size=7)
    train_both(config, data, tmp_path)
    rank0 = torch.load(tmp_path / f"rank0-step{K}.pt")
    for key, value in torch.load(tmp_path / f"rank1-step{K}.pt").items():
        assert torch.equal(rank0[key], value), key
    assert_close(rank0, torch.load(tmp_path / f"single-step{K}.pt"), RTOL)


def test_a_rank_that_raises_ends_the_run_with_an_error(tmp_path):
    data = tiny("btc-sample", tmp_path)
    config = Config().from_disk(ROOT / "configs" / "ner.cfg", interpolate=False)
    config["training"]["before_update"] = {"@callbacks": "test_parallel.raise_on_rank.v1", "rank": 1, "at_step": 3}
    config.to_disk(tmp_path / "raises.cfg")
    result = run_spacy(
        ["train-distributed", tmp_path / "raises.cfg", "--output", tmp_path / "out", "--code", CALLBACKS,
         "--paths.train", data["train"], "--paths.dev", data["dev"], "--training.max_steps", "50",
         "--timeout", "60"],
        check=False,
        timeout=120,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Distributed training failed" in output
    assert re.search(r"rank 1 \(exit code -?\d+\): RuntimeError: test failure on rank 1 at step 3", output), output


def _nlp(name: str):
    config = Config().from_disk(ROOT / "configs" / f"{name}.cfg", interpolate=False)
    return spacy.util.load_model_from_config(config, auto_fill=True)


@pytest.mark.parametrize("config,component", [("torch_tok2vec_spacy_ner", "ner"), ("ner_spacy_tok2vec", "tok2vec")])
def test_thinc_native_parameters_are_refused_by_name(config, component):
    with pytest.raises(ValueError, match=f"Component '{component}' .*outside spacy-pytorch-shim's torch modules"):
        data_parallel_shims(_nlp(config))


def test_frozen_thinc_native_component_is_allowed():
    shims = data_parallel_shims(_nlp("ner_spacy_tok2vec"), frozen=["tok2vec"])
    assert [reduction for _, reduction in shims] == ["sum"]


def test_loss_reductions_of_the_torch_components():
    assert loss_reduction(_nlp("ner"), "torch_ner") == "sum"
    assert loss_reduction(_nlp("textcat"), "torch_textcat") == "mean"
    assert loss_reduction(_nlp("textcat_multilabel"), "torch_textcat_multilabel") == "mean"
