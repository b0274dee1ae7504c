"""spaCy 3.8's own `spacy/tests/training/test_rehearse.py`, run against
`torch_ner` and `torch_textcat_multilabel` (see conftest.py for how the
factories are swapped): train, add labels, `nlp.resume_training()` and
`nlp.rehearse`."""
from spacy.tests.training import test_rehearse as spacy_test_rehearse

from .conftest import adapt

globals().update(
    adapt(
        spacy_test_rehearse,
        replace={},
        skips={},
        # Its tagger and parser cases run spaCy's own components.
        parameters={"test_rehearse": ("component", ["ner", "textcat_multilabel"])},
    )
)
