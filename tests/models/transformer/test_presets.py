"""The transformer presets are complete configs that build a pipeline
without reading the encoder (it is read at initialization)."""
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
