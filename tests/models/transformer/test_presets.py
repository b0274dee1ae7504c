"""The transformer presets are complete configs that build a pipeline
without reading the encoder (it is read at initialization)."""
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.cli.init_config import fill_config
from spacy.training import Example
from thinc.api import Config

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
from tiny_encoders import WIDTH

PRESETS = {"ner_transformer": "torch_ner", "textcat_transformer": "torch_textcat",
           "textcat_multilabel_transformer": "torch_textcat_multilabel"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_is_complete_and_builds_with_no_network(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = CONFIGS / f"{name}.cfg"
    fill_config(tmp_path / "filled.cfg", path, silent=True)
    assert Config().from_disk(tmp_path / "filled.cfg", interpolate=False) == Config().from_disk(path, interpolate=False)
    config = Config().from_disk(path, overrides={"encoder.name": "no/such-encoder", "encoder.width": 48})
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    assert nlp.pipe_names == [PRESETS[name]]
    encoder = nlp.get_pipe(PRESETS[name]).model.get_ref("tok2vec")
    assert encoder.attrs["hf_name"] == "no/such-encoder" and encoder.get_dim("nO") == 48
    assert not encoder.shims[0].built


def shim_multipliers(nlp):
    """{wrapper name: the multipliers ParamGroups set on its parameters}."""
    return {node.name: set(node.shims[0].learn_rate_multipliers.values())
            for _, pipe in nlp.components for node in pipe.model.walk() if node.shims}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_trains_its_heads_at_the_schedules_rate_and_the_encoder_at_a_twentieth(name, encoder_dir):
    """A head starts from random weights and barely moves at a pretrained
    encoder's fine-tuning rate: the presets give the heads the schedule's
    rate and the encoder 0.05 of it."""
    config = Config().from_disk(CONFIGS / f"{name}.cfg", overrides={"encoder.name": str(encoder_dir("bert")), "encoder.width": WIDTH})
    assert config["training"]["optimizer"]["learn_rate"]["initial_rate"] == 0.001
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    examples = [Example.from_dict(nlp.make_doc("Alice lives in Paris"), {"entities": [(0, 5, "PER")], "cats": {"A": 1.0, "B": 0.0}})]
    nlp.initialize(lambda: examples)
    multipliers = shim_multipliers(nlp)
    assert multipliers.pop("hf_encoder") == {0.05}
    assert multipliers and all(values == set() for values in multipliers.values()), multipliers


def init_torch_config(*args, cwd):
    """`python -m spacy init torch-config ...`, as a user runs it (offline)."""
    return subprocess.run(
        [sys.executable, "-m", "spacy", "init", "torch-config", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )


def test_init_torch_config_encoder_writes_the_transformer_preset_on_it(encoder_dir, tmp_path):
    """--encoder: the transformer preset, the encoder's name in [encoder] and
    its width read from its config; the pipeline builds offline."""
    bert = encoder_dir("bert")
    done = init_torch_config("config.cfg", "--pipeline", "ner", "--encoder", bert, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    config = Config().from_disk(tmp_path / "config.cfg")
    assert config["encoder"]["name"] == str(bert)
    assert config["encoder"]["width"] == __import__("json").loads((bert / "config.json").read_text())["hidden_size"]
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    assert nlp.pipe_names == ["torch_ner"]
    assert nlp.get_pipe("torch_ner").model.get_ref("tok2vec").attrs["hf_name"] == str(bert)


def test_init_torch_config_encoder_shares_one_encoder_between_components(encoder_dir, tmp_path):
    """--encoder with several components: one encoder, in a tok2vec
    component, that each component listens to (one encoder pass per batch:
    test_pipelines.py)."""
    bert = encoder_dir("bert")
    done = init_torch_config("config.cfg", "--pipeline", "ner,textcat", "--encoder", bert, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "one encoder (components.tok2vec) for torch_ner, torch_textcat" in done.stdout + done.stderr
    config = Config().from_disk(tmp_path / "config.cfg")
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    assert nlp.pipe_names == ["tok2vec", "torch_ner", "torch_textcat"]
    encoders = [node for _, pipe in nlp.components for node in pipe.model.walk() if "hf_name" in node.attrs]
    assert [node.attrs["hf_name"] for node in encoders] == [str(bert)]
    assert {name for name in nlp.get_pipe("tok2vec").listening_components} == {"torch_ner", "torch_textcat"}
    examples = [Example.from_dict(nlp.make_doc("Alice lives in Paris"), {"entities": [(0, 5, "PER")], "cats": {"A": 1.0, "B": 0.0}})]
    nlp.initialize(lambda: examples)
    assert shim_multipliers(nlp) == {"hf_encoder": {0.05}, "torch_ner_head": set(), "torch_textcat_pooling": set(),
                                     "torch_textcat_ngrams": set()}


@pytest.mark.parametrize("args,message", [
    (["--encoder-width", "8"], "--encoder-width is the width of --encoder: give --encoder too"),
    (["--encoder", "no/such-encoder"], "--encoder 'no/such-encoder': cannot read its config"),
    (["--encoder", "x", "--encoder-width", "0"], "--encoder-width 0: must be a positive integer"),
    (["--encoder", "x", "--optimize", "accuracy"], "--encoder chooses the transformer presets: --optimize does not apply"),
])
def test_init_torch_config_encoder_errors_are_one_line(args, message, tmp_path):
    done = init_torch_config("config.cfg", *args, cwd=tmp_path)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 1 and "Traceback" not in output, output
    assert [line for line in output.splitlines() if message in line], output
    assert not (tmp_path / "config.cfg").exists()
