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
        skips={
            "test_no_resize": (
                "spaCy's legacy architectures (TextCatBOW.v1, TextCatEnsemble.v1, TextCatCNN.v1) must refuse "
                "add_label after initialization; the swap gives our architecture, which resizes (test_resize)"
            ),
            "test_textcat_loss": (
                "expects the values of spaCy's loss (the mean squared error of the scores: 0.125); ours is "
                "cross-entropy (tests/pipeline/test_textcat.py::test_get_loss_takes_what_predict_returns)"
            ),
            "test_issue9904": (
                "pairs `examples * 2` ([a, b, a, b]) with `scores.repeat(2, axis=0)` ([a, a, b, b]), which agree "
                "only when an untrained model scores every doc alike (spaCy's zero-initialised output layer); "
                "the batch-size invariance it stands for is "
                "tests/pipeline/test_textcat.py::test_get_loss_takes_what_predict_returns"
            ),
        },
    )
)
