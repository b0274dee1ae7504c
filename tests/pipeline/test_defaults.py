"""Each factory's default model is its efficiency preset's (configs/), so a
component added without a config is the one the docs measure."""
from pathlib import Path

import pytest
import spacy
from spacy.util import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PRESETS = {"torch_ner": "ner.cfg", "torch_textcat": "textcat.cfg", "torch_textcat_multilabel": "textcat_multilabel.cfg"}


@pytest.mark.parametrize("factory", sorted(PRESETS))
def test_default_model_is_the_efficiency_preset(factory):
    nlp = spacy.blank("en")
    nlp.add_pipe(factory)
    default = nlp.config.interpolate()["components"][factory]["model"]
    preset = load_config(CONFIGS / PRESETS[factory], interpolate=True)["components"][factory]["model"]
    assert default == preset
