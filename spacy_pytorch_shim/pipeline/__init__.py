from .ner import TorchEntityRecognizer
from .textcat import TorchTextCategorizer

__all__ = ["TorchEntityRecognizer", "TorchTextCategorizer"]
