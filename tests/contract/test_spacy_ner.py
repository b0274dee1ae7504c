"""spaCy 3.8's own `spacy/tests/parser/test_ner.py`, run against `torch_ner`
(see conftest.py for how the factory is swapped)."""
from spacy.tests.parser import test_ner as spacy_test_ner
from thinc.api import Config

from spacy_pytorch_shim.pipeline.ner import DEFAULT_NER_MODEL

from .conftest import adapt, entity_recognizer

TRANSITIONS = "tests spaCy's transition system (BiluoPushDown moves and oracle), which a tagger has no counterpart of"
OVERFIT = (
    "sets spaCy's parser model settings (use_upper, attrs['has_upper']) and a loss threshold (< 1e-5 after 50 "
    "updates) tuned to spaCy's loss; the rest of it is in tests/pipeline/test_ner.py: "
    "test_disk_and_bytes_round_trip_with_added_label, test_add_label_after_training_keeps_entities_then_learns_it, "
    "test_batches_and_single_docs_agree, test_preset_entities_and_their_kb_id_are_kept_and_filled_around"
)
RESIZE_BY_MOVES = (
    "resizes the model through ner.moves.n_moves (the transition system); TorchEntityRecognizer.from_bytes "
    "sizes the model from the saved labels itself (tests/pipeline/test_ner.py::test_disk_and_bytes_round_trip_with_added_label)"
)
BEAM = "tests spaCy's beam search (ner.beam_parse/scored_ents of beam states); torch_ner's per-entity probabilities are tested in tests/pipeline/test_ner.py"

globals().update(
    adapt(
        spacy_test_ner,
        replace={
            "EntityRecognizer": entity_recognizer,
            "DEFAULT_NER_MODEL": Config().from_str(DEFAULT_NER_MODEL)["model"],
        },
        skips={
            "test_issue1967": TRANSITIONS,
            "test_issue2179": RESIZE_BY_MOVES,
            "test_issue3209": RESIZE_BY_MOVES,
            "test_overfitting_IO": OVERFIT,
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
