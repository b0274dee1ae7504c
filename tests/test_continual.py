"""The settings of spacy-pytorch-shim.learn_without_forgetting.v1 and
RehearsalCorpus.v1 are checked when the config is resolved: a bad value is a
config error (spaCy's CLI prints it without a traceback) that names the
setting, the value and what is allowed."""
import math
from pathlib import Path

import pytest
import spacy
from confection import ConfigValidationError
from thinc.api import Config

from spacy_pytorch_shim.continual import learn_without_forgetting_v1, rehearsal_corpus_v1

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "btc-sample"


def _reader(**settings):
    config = {"@readers": "spacy-pytorch-shim.RehearsalCorpus.v1", "path": str(SAMPLE / "dev.spacy"),
              "rehearsal_path": str(SAMPLE / "test.spacy"), **settings}
    return spacy.registry.resolve(Config({"corpora": {"train": config}}))["corpora"]["train"]


@pytest.mark.parametrize("ratio", [math.nan, math.inf, -0.5, 101.0])
def test_rehearsal_ratio_must_be_a_number_from_0_to_100(ratio):
    with pytest.raises(ConfigValidationError, match=rf"rehearsal_ratio\t{ratio}: must be a number from 0 to 100"):
        _reader(rehearsal_ratio=ratio)


@pytest.mark.parametrize("key,value,allowed", [
    ("max_length", -1, "must be an integer >= 0"),
    ("limit", -2, "must be an integer >= 0"),
    ("path", "missing.spacy", "missing.spacy: not found; must be a .spacy file or a directory with .spacy files"),
    ("rehearsal_path", str(SAMPLE.parent), None),  # a directory of them: allowed
    ("rehearsal_path", __file__, "must be a .spacy file or a directory with .spacy files"),
])
def test_reader_settings_are_checked(key, value, allowed):
    if allowed is None:
        _reader(**{key: value})
        return
    with pytest.raises(ConfigValidationError, match=rf"RehearsalCorpus.v1\n{key}\t.*{allowed}"):
        _reader(**{key: value})


def test_types_are_checked_by_the_registry():
    with pytest.raises(ConfigValidationError, match="rehearsal_ratio"):
        _reader(rehearsal_ratio="half")
    with pytest.raises(ConfigValidationError, match="new_labels"):
        spacy.registry.resolve(Config({"cb": {"@callbacks": "spacy-pytorch-shim.learn_without_forgetting.v1", "new_labels": ["ORG"]}}))


def test_a_valid_ratio_mixes_old_examples_in():
    nlp = spacy.blank("en")
    examples = list(rehearsal_corpus_v1(SAMPLE / "dev.spacy", SAMPLE / "test.spacy", rehearsal_ratio=0.5, limit=4)(nlp))
    assert len(examples) == 6


@pytest.mark.parametrize("labels", [[""], [" "], ["ORG", ""]])
def test_labels_must_be_non_empty_strings(labels):
    with pytest.raises(ConfigValidationError, match=r"new_labels\t'torch_ner': .*labels must be non-empty strings"):
        learn_without_forgetting_v1(new_labels={"torch_ner": labels})


def test_callback_names_the_setting_that_does_not_fit_the_pipeline():
    nlp = spacy.blank("en")
    with pytest.raises(ConfigValidationError, match="after_init\tno torch component has a teacher"):
        learn_without_forgetting_v1()(nlp)
    with pytest.raises(ConfigValidationError, match="new_labels\tnames 'ner', which is not a torch component sourced"):
        learn_without_forgetting_v1(new_labels={"ner": ["ORG"]})(nlp)
