from .resize import resize_embedding, resize_input, resize_layer, resize_linear, resize_output
from .torch_shim import TorchShim
from .torch_wrapper import TorchWrapper

__all__ = [
    "TorchShim",
    "TorchWrapper",
    "resize_embedding",
    "resize_input",
    "resize_layer",
    "resize_linear",
    "resize_output",
]
