"""`spacy debug data` selects its NER and text-classification checks by
factory name: inside `as_spacy_factories()` they run for our components."""
from pathlib import Path

import pytest
import spacy
from spacy.cli.debug_data import debug_data
from spacy.tokens import DocBin

from spacy_pytorch_shim.pipeline import as_spacy_factories

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    "config, annotation, section",
    [
        ("ner.cfg", {"entities": [(0, 5, "PER")]}, "Named Entity Recognition"),
        ("textcat.cfg", {"cats": {"A": 1.0, "B": 0.0}}, "Text Classification (Exclusive Classes)"),
    ],
)
def test_debug_data_runs_spacys_checks_for_our_components(tmp_path, capsys, config, annotation, section):
    nlp = spacy.blank("en")
    docs = []
    for text in ["Alice lives here", "Alice is away"]:
        doc = nlp.make_doc(text)
        if "entities" in annotation:
            doc.ents = [doc.char_span(s, e, label=label) for s, e, label in annotation["entities"]]
        else:
            doc.cats = annotation["cats"]
        docs.append(doc)
    DocBin(docs=docs).to_disk(tmp_path / "data.spacy")
    paths = {"paths.train": str(tmp_path / "data.spacy"), "paths.dev": str(tmp_path / "data.spacy")}
    with pytest.raises(SystemExit):  # two docs: debug data fails on its "low number of examples"
        debug_data(CONFIGS / config, config_overrides=paths, silent=False)
    assert section not in capsys.readouterr().out
    with as_spacy_factories(), pytest.raises(SystemExit):
        debug_data(CONFIGS / config, config_overrides=paths, silent=False)
    assert section in capsys.readouterr().out
