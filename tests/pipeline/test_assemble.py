"""`spacy assemble` of a config with our components and no labels."""
import subprocess
import sys

import pytest
import spacy

TOK2VEC = {"width": 16, "rows": [200, 50, 50, 50], "encoder": {"width": 16, "depth": 1}}


def assemble(factory, config, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe(factory, config={"model": config})
    nlp.config.to_disk(tmp_path / "config.cfg")
    return subprocess.run(
        [sys.executable, "-m", "spacy", "assemble", tmp_path / "config.cfg", tmp_path / "out"],
        capture_output=True, text=True, timeout=240,
    )


def test_assemble_torch_ner_without_labels_works_like_spacy_ner(tmp_path):
    result = assemble("torch_ner", {"tok2vec": TOK2VEC, "hidden_width": 16}, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    nlp = spacy.load(tmp_path / "out")
    assert nlp.get_pipe("torch_ner").labels == () and nlp("Alice in Paris").ents == ()


@pytest.mark.parametrize("factory", ["torch_textcat", "torch_textcat_multilabel"])
def test_assemble_textcat_without_labels_ends_in_one_line_that_says_why(factory, tmp_path):
    result = assemble(factory, {"tok2vec": None, "ngram_rows": 64}, tmp_path)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: [E143]") and "pass labels=" in last
