"""spaCy 3.8's own `spacy/tests/serialize/test_serialize_pipeline.py`, run
against `torch_ner` and `torch_textcat` (see conftest.py for how the
factories are swapped)."""
from spacy.tests.serialize import test_serialize_pipeline as spacy_test_serialize_pipeline
from thinc.api import Config

from spacy_pytorch_shim.pipeline.ner import DEFAULT_NER_MODEL
from spacy_pytorch_shim.pipeline.textcat import DEFAULT_TEXTCAT_MODEL, TorchTextCategorizer

from .conftest import adapt, entity_recognizer

PARSER_ONLY = "tests spaCy's DependencyParser (its moves), which has no torch counterpart"

globals().update(
    adapt(
        spacy_test_serialize_pipeline,
        replace={
            "EntityRecognizer": entity_recognizer,
            "TextCategorizer": TorchTextCategorizer,
            # The parser tests build their NER from this model.
            "DEFAULT_PARSER_MODEL": Config().from_str(DEFAULT_NER_MODEL)["model"],
            "DEFAULT_SINGLE_TEXTCAT_MODEL": Config().from_str(DEFAULT_TEXTCAT_MODEL)["model"],
        },
        parameters={
            name: ("Parser", [entity_recognizer])
            for name in (
                "test_serialize_parser_roundtrip_bytes",
                "test_serialize_parser_strings",
                "test_serialize_parser_roundtrip_disk",
                "test_serialize_pipe_exclude",
            )
        },
        skips={
            "test_to_from_bytes": PARSER_ONLY,
            "test_issue4725_1": (
                "reads back update_with_oracle_cut_size, a setting of spaCy's transition-based parser that a "
                "tagger has no counterpart of (pickling: tests/pipeline/test_loading.py::"
                "test_unknown_key_is_refused_and_the_cfg_survives_pickle)"
            ),
            "test_serialize_pipe_exclude": (
                "sets cfg['foo'], which the torch components refuse: their cfg holds their own keys, each "
                "checked (tests/pipeline/test_loading.py::test_unknown_key_is_refused_and_the_cfg_survives_pickle)"
            ),
        },
    )
)
