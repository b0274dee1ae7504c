"""The transformer NER preset through the command line on a tiny BERT:
`spacy train` end to end, `spacy train-distributed` on 2 ranks giving the
weights of one process, and `spacy package` installed into a fresh virtual
environment, loaded with the hub offline and the encoder's files gone."""
import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import spacy
import torch
from spacy.cli.package import package
from spacy.tokens import DocBin
from thinc.api import Config

from tiny_encoders import DATA, WIDTH

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
CALLBACKS = ROOT / "tests" / "data_parallel" / "callbacks.py"
K = 3  # updates before the distributed and one-process weights are compared
TIMEOUT = 300


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", **kwargs.pop("env", {}))
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=ROOT)
    if result.returncode != 0:
        pytest.fail(f"exit {result.returncode}: {' '.join(map(str, cmd))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def setup(encoder_dir, tmp_path_factory):
    """A copy of the tiny BERT (removed by the tests that need it gone),
    tiny train/dev sets and the preset with dropout 0, float32 and K steps."""
    out = tmp_path_factory.mktemp("cli")
    encoder = out / "encoder"
    shutil.copytree(encoder_dir("bert"), encoder)
    nlp = spacy.blank("en")
    paths = {}
    for split, n in (("train", 24), ("dev", 12)):
        docs = list(DocBin().from_disk(DATA / "btc-sample" / f"{split}.spacy").get_docs(nlp.vocab))[:n]
        paths[split] = out / f"{split}.spacy"
        DocBin(docs=docs).to_disk(paths[split])
    config = Config().from_disk(ROOT / "configs" / "ner_transformer.cfg", interpolate=False)
    config["training"].update(dropout=0.0, max_steps=K, eval_frequency=K)
    config["training"]["optimizer"]["learn_rate"] = 0.001  # no warm-up: the weights move in K steps
    config["training"]["before_update"] = {"@callbacks": "test_parallel.dump_weights.v1", "directory": str(out), "at_step": K}
    config["training"]["batcher"] = {"@batchers": "spacy.batch_by_sequence.v1", "size": 8, "get_length": None}
    # float32: bfloat16's rounding (the preset's "auto" on such hardware)
    # differs with the batch split, beyond the equality checked here.
    config["components"]["torch_ner"]["model"]["model"]["tok2vec"]["mixed_precision"] = "float32"
    config.to_disk(out / "config.cfg")
    args = ["--paths.train", paths["train"], "--paths.dev", paths["dev"], "--encoder.name", encoder,
            "--encoder.width", WIDTH, "--code", CALLBACKS]
    return out, encoder, args


@pytest.fixture(scope="module")
def trained(setup):
    out, encoder, args = setup
    result = run([sys.executable, "-m", "spacy", "train", out / "config.cfg", "--output", out / "one", *args])
    return out, result


def test_spacy_train_runs_the_preset_end_to_end(trained):
    out, result = trained
    assert "ENTS_F" in result.stdout
    meta = json.loads((out / "one" / "model-best" / "meta.json").read_text())
    assert "ents_f" in meta["performance"]
    assert (out / "one" / "model-last" / "torch_ner" / "model").stat().st_size > 10_000


def test_train_distributed_gives_the_weights_of_one_process(setup, trained):
    out, encoder, args = setup
    run([sys.executable, "-m", "spacy", "train-distributed", out / "config.cfg", "--output", out / "two",
         "--nproc-per-node", 2, "--timeout", 200, *args])
    single, start = torch.load(out / f"single-step{K}.pt"), torch.load(out / "single-step0.pt")
    for rank in ("rank0", "rank1"):
        ranked = torch.load(out / f"{rank}-step{K}.pt")
        assert ranked.keys() == single.keys()
        for key, ref in single.items():
            if key.endswith("attention.self.key.bias"):
                # Its gradient is zero in exact arithmetic (softmax ignores a
                # constant shift); Adam scales its rounding noise, which
                # differs with the batch split, up to updates of ~1e-6.
                continue
            assert float((ranked[key].double() - ref.double()).norm()) <= 1e-5 * float(ref.double().norm()) + 1e-9, key
    # The encoder itself moved far beyond that bound.
    moved = [key for key in single if "encoder.layer" in key and float((single[key] - start[key]).norm()) > 1e-3]
    assert len(moved) > 10


def test_a_packaged_pipeline_loads_in_a_fresh_environment_with_no_network(setup, trained, tmp_path):
    out, encoder, args = setup
    packages = tmp_path / "packages"
    packages.mkdir()
    package(out / "one" / "model-best", packages, name="hf_test", version="0.0.1", create_sdist=False, force=True, silent=True)
    # The wheel `--build wheel` makes, without build's isolated environment (which would fetch setuptools).
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", packages,
         packages / "en_hf_test-0.0.1"])
    wheel = next(packages.glob("*.whl"))
    # A fresh environment that sees this one's packages (torch, spaCy, this
    # package) after its own, with only the pipeline's wheel installed.
    fresh = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(fresh)
    python = fresh / "bin" / "python"
    fresh_site = fresh / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    (fresh_site / "zz_parent.pth").write_text(f"import site; site.addsitedir({site.getsitepackages()[0]!r})\n")
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", fresh_site, wheel])
    shutil.rmtree(encoder)
    texts = ["I met Barack Obama in Paris .", "Nothing here"]
    script = (
        "import json, sys, spacy\n"
        "nlp = spacy.load('en_hf_test')\n"
        "print(json.dumps([[(e.text, e.label_) for e in d.ents] for d in nlp.pipe(json.loads(sys.argv[1]))]))\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home")}
    got = json.loads(run([python, "-c", script, json.dumps(texts)], env=env).stdout.strip().splitlines()[-1])
    nlp = spacy.load(out / "one" / "model-best")
    assert got == [[list(e) for e in [(ent.text, ent.label_) for ent in d.ents]] for d in nlp.pipe(texts)]
    assert not (tmp_path / "empty-hf-home").exists()
