"""spaCy plugin that makes PyTorch models first-class spaCy citizens."""
from . import fork  # noqa: F401  (one torch thread in forked children: nlp.pipe(n_process>1))
from .models import (
    TorchShim,
    TorchWrapper,
    resize_embedding,
    resize_input,
    resize_layer,
    resize_linear,
    resize_output,
)

__version__ = "0.1.0"

__all__ = [
    "TorchShim",
    "TorchWrapper",
    "resize_embedding",
    "resize_input",
    "resize_layer",
    "resize_linear",
    "resize_output",
]
