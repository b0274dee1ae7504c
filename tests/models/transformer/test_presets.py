"""The transformer presets are complete configs that build a pipeline
without reading the encoder (it is read at initialization)."""
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.cli.init_config import fill_config
from thinc.api import Config

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
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


def init_torch_config(*args, cwd):
    """`python -m spacy init torch-config ...`, as a user runs it (offline)."""
    return subprocess.run(
        [sys.executable, "-m", "spacy", "init", "torch-config", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )


def test_init_torch_config_encoder_writes_the_transformer_presets_on_it(encoder_dir, tmp_path):
    """--encoder: the transformer presets, the encoder's name in [encoder] and
    its width read from its config; the pipeline builds offline."""
    bert = encoder_dir("bert")
    done = init_torch_config("config.cfg", "--pipeline", "ner,textcat", "--encoder", bert, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    config = Config().from_disk(tmp_path / "config.cfg")
    assert config["encoder"]["name"] == str(bert)
    assert config["encoder"]["width"] == __import__("json").loads((bert / "config.json").read_text())["hidden_size"]
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    assert nlp.pipe_names == ["torch_ner", "torch_textcat"]
    for name in nlp.pipe_names:
        assert nlp.get_pipe(name).model.get_ref("tok2vec").attrs["hf_name"] == str(bert)


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
