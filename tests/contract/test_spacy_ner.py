"""spaCy 3.8's own `spacy/tests/parser/test_ner.py`, run against `torch_ner`
(see conftest.py for how the factory is swapped)."""
from spacy.tests.parser import test_ner as spacy_test_ner
from thinc.api import Config

from spacy_pytorch_shim.pipeline.ner import DEFAULT_NER_MODEL, TorchEntityRecognizer

from .conftest import adapt

TRANSITIONS = "tests spaCy's transition system (BiluoPushDown moves and oracle), which a tagger has no counterpart of"
BEAM = "tests spaCy's beam search (ner.beam_parse/scored_ents of beam states); torch_ner's per-entity probabilities are tested in tests/pipeline/test_ner.py"

globals().update(
    adapt(
        spacy_test_ner,
        replace={
            "EntityRecognizer": TorchEntityRecognizer,
            "DEFAULT_NER_MODEL": Config().from_str(DEFAULT_NER_MODEL)["model"],
        },
        skips={
            "test_issue1967": TRANSITIONS,
            "test_get_oracle_moves": TRANSITIONS,
            "test_negative_samples_two_word_input": TRANSITIONS,
            "test_negative_samples_three_word_input": TRANSITIONS,
            "test_negative_samples_U_entity": TRANSITIONS,
            "test_negative_sample_key_is_in_config": TRANSITIONS,
            "test_accept_blocked_token": TRANSITIONS + " (blocked tokens: test_block_ner)",
            "test_overwrite_token": TRANSITIONS,
            "test_issue4313": BEAM,
            "test_beam_ner_scores": BEAM,
            "test_beam_overfitting_IO": BEAM,
        },
    )
)
