"""The names this package registers.

Every name is declared in setup.cfg's entry points; tests/test_registry.py
resolves each through spaCy's registry and checks that setup.cfg declares
exactly these.
"""
ARCHITECTURES = [
    "spacy-pytorch-shim.TorchWrapper.v1",
    "spacy-pytorch-shim.TorchTok2Vec.v1",
    "spacy-pytorch-shim.CNNEncoder.v1",
    "spacy-pytorch-shim.BiLSTMEncoder.v1",
    "spacy-pytorch-shim.TorchNERTagger.v1",
    "spacy-pytorch-shim.TorchTextCat.v1",
    "spacy-pytorch-shim.ParamGroups.v1",
    "spacy-pytorch-shim.CNNEncoder.v2",
    "spacy-pytorch-shim.BiLSTMEncoder.v2",
    "spacy-pytorch-shim.TorchNERTagger.v2",
    "spacy-pytorch-shim.TorchTextCat.v2",
    "spacy-pytorch-shim.TorchTok2Vec.v2",
    "spacy-pytorch-shim.TorchTok2Vec.v3",
    "spacy-pytorch-shim.TorchTextCat.v3",
    "spacy-pytorch-shim.TorchTok2Vec.v4",
    "spacy-pytorch-shim.TorchTextCat.v4",
    "spacy-pytorch-shim.HFEncoder.v1",
]
FACTORIES = ["torch_ner", "torch_textcat", "torch_textcat_multilabel"]
CALLBACKS = ["spacy-pytorch-shim.learn_without_forgetting.v1"]
READERS = ["spacy-pytorch-shim.RehearsalCorpus.v1"]

__all__ = ["ARCHITECTURES", "CALLBACKS", "FACTORIES", "READERS"]
