"""spaCy 3.8's own `spacy/tests/pipeline/test_textcat.py`, run against
`torch_textcat` and `torch_textcat_multilabel` (see conftest.py for how the
factories are swapped)."""
from spacy.tests.pipeline import test_textcat as spacy_test_textcat

from spacy_pytorch_shim.pipeline.textcat import TorchTextCategorizer

from .conftest import adapt

globals().update(
    adapt(
        spacy_test_textcat,
        replace={"TextCategorizer": TorchTextCategorizer},
        skips={},
    )
)
