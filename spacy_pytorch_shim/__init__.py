"""spaCy plugin that makes PyTorch models first-class spaCy citizens."""
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
