from .ner import TorchEntityRecognizer
from .spacy_names import SPACY_FACTORIES, as_spacy_factories
from .textcat import TorchMultiLabelTextCategorizer, TorchTextCategorizer, TorchTextCategorizerBase

__all__ = [
    "SPACY_FACTORIES",
    "as_spacy_factories",
    "TorchEntityRecognizer",
    "TorchMultiLabelTextCategorizer",
    "TorchTextCategorizer",
    "TorchTextCategorizerBase",
]
