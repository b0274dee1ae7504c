from .ner import TorchEntityRecognizer
from .textcat import TorchMultiLabelTextCategorizer, TorchTextCategorizer, TorchTextCategorizerBase

__all__ = [
    "TorchEntityRecognizer",
    "TorchMultiLabelTextCategorizer",
    "TorchTextCategorizer",
    "TorchTextCategorizerBase",
]
