"""Registry helpers."""
from spacy.util import registry

# Every registered name lives in setup.cfg's entry points; this is the list the
# registry tests resolve.
ARCHITECTURES = [
    "spacy-pytorch-shim.TorchWrapper.v1",
    "spacy-pytorch-shim.TorchTok2Vec.v1",
    "spacy-pytorch-shim.CNNEncoder.v1",
    "spacy-pytorch-shim.BiLSTMEncoder.v1",
    "spacy-pytorch-shim.TorchNERTagger.v1",
    "spacy-pytorch-shim.TorchTextCat.v1",
]
FACTORIES = ["torch_ner", "torch_textcat", "torch_textcat_multilabel"]

__all__ = ["registry", "ARCHITECTURES", "FACTORIES"]
