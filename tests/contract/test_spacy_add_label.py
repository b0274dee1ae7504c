"""spaCy 3.8's own `spacy/tests/parser/test_add_label.py`, run against
`torch_ner` (see conftest.py for how the factory is swapped)."""
from spacy.tests.parser import test_add_label as spacy_test_add_label

from .conftest import adapt

PARSER_ONLY = "tests spaCy's DependencyParser, which has no torch counterpart"
BEAM = "tests spaCy's beam search (beam_parse, greedy_parse of parser states); torch_ner decodes exactly"

globals().update(
    adapt(
        spacy_test_add_label,
        replace={},
        skips={
            "test_init_parser": PARSER_ONLY,
            "test_add_label": PARSER_ONLY,
            "test_add_label_deserializes_correctly": (
                "resizes the model through ner.moves.n_moves and compares ner.moves (the transition system); "
                "the same round trip with labels added before initialize is "
                "tests/pipeline/test_loading.py::test_pipeline_saved_before_initialize_with_labels_loads"
            ),
            "test_add_label_get_label": (
                "counts spaCy's moves before initialize: 4 per label, its O move added only at initialize; "
                "torch_ner's move_names are its tags, always \"O\" then B/I/L/U per label (13 for 3 labels); "
                "the labels it returns are tests/pipeline/test_ner.py::test_initialize_with_given_labels"
            ),
            "test_ner_labels_added_implicitly_on_predict": (
                "expects the label of an entity set before the component to become one of its labels at "
                "prediction; torch_ner keeps such entities on the doc (tests/pipeline/test_ner.py::"
                "test_preset_entities_and_their_kb_id_are_kept_and_filled_around) and does not change its "
                "model while predicting"
            ),
            "test_ner_labels_added_implicitly_on_beam_parse": BEAM,
            "test_ner_labels_added_implicitly_on_greedy_parse": BEAM,
        },
    )
)
