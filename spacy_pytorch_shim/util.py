"""Registry helpers."""
from spacy.util import registry

# Every registered name lives in setup.cfg's entry points; this is the list the
# registry tests resolve.
ARCHITECTURES = ["spacy-pytorch-shim.TorchWrapper.v1"]
FACTORIES: list = []

__all__ = ["registry", "ARCHITECTURES", "FACTORIES"]
