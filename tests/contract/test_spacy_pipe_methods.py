"""spaCy 3.8's own `spacy/tests/pipeline/test_pipe_methods.py`, run with
`torch_ner` and `torch_textcat` wherever it adds `ner` or `textcat` (see
conftest.py for how the factories are swapped)."""
from spacy.tests.pipeline import test_pipe_methods as spacy_test_pipe_methods

from .conftest import adapt

globals().update(adapt(spacy_test_pipe_methods, replace={}, skips={}))
