"""Layer-wise learning-rate decay: the top layer learns at the full rate,
each layer below at `decay` times the one above, the embeddings lowest."""
import re
from typing import Dict

from torch import nn

_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def layer_decay_multipliers(module: nn.Module, decay: float) -> Dict[str, float]:
    """Learn-rate multipliers by parameter name: decay**(L-1-i) for layer i
    of L, decay**L for the embeddings; 1 for anything else (final norms, a
    pooler), which sits above the layers."""
    layers = {}
    for name, _ in module.named_parameters():
        found = _LAYER.search(name)
        layers[name] = int(found.group(1)) if found else None
    n_layers = max((i for i in layers.values() if i is not None), default=-1) + 1
    multipliers: Dict[str, float] = {}
    for name, layer in layers.items():
        if layer is not None:
            multipliers[name] = decay ** (n_layers - 1 - layer)
        elif "embeddings" in name:
            multipliers[name] = decay**n_layers
    return multipliers
