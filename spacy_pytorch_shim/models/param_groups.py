"""Frozen parameters and per-parameter learn rates, chosen in the config.

Parameters are named `<wrapper>.<parameter>`: the name of the TorchWrapper
node in the Thinc model (e.g. `torch_tok2vec_encoder`, `torch_ner_head`)
and the parameter's name in its torch module (e.g. `embed.weight`); a name
shared by several wrappers gets `#1`, `#2`... from the second on.
"""
from fnmatch import fnmatchcase
from typing import Any, Dict, List, Tuple

import torch
from thinc.api import Model

from .torch_shim import TorchShim


def with_param_groups(
    model: Model[Any, Any],
    *,
    frozen: List[str] = [],
    learn_rate_multipliers: Dict[str, float] = {},
) -> Model[Any, Any]:
    """"spacy-pytorch-shim.ParamGroups.v1": `model` itself, with the torch
    parameters matching a `frozen` pattern frozen (`requires_grad=False`:
    no gradient is computed for them, the optimizer keeps no state for them
    and they never change) and the update of those matching a
    `learn_rate_multipliers` pattern scaled (Thinc's `lr_scale`). Patterns
    are shell-style (`*` matches dots too); for a parameter matching several
    multiplier patterns the first one counts. A pattern that matches nothing
    is an error naming it and the parameters there are."""
    for pattern, value in learn_rate_multipliers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(
                f"learn_rate_multipliers['{pattern}'] must be a positive number, got {value!r}"
                " (to keep parameters fixed, list them in `frozen`)"
            )
    # Torch modules built later (a Hugging Face encoder, read at
    # initialization or from saved data): once all are built, and again each
    # time one is rebuilt.
    lazy = [shim for node in model.walk() for shim in node.shims if hasattr(shim, "when_built")]
    apply = lambda: all(shim.built for shim in lazy) and _apply_param_groups(model, frozen, learn_rate_multipliers)
    if not lazy:
        apply()
    for shim in lazy:
        shim.when_built(apply)
    return model


def _apply_param_groups(model: Model, frozen: List[str], learn_rate_multipliers: Dict[str, float]) -> None:
    params = named_torch_parameters(model)
    for setting, patterns in (("frozen", list(frozen)), ("learn_rate_multipliers", list(learn_rate_multipliers))):
        for pattern in patterns:
            if not any(fnmatchcase(name, pattern) for name in params):
                raise ValueError(
                    f"{setting}: the pattern '{pattern}' matches no parameter of model "
                    f"'{model.name}'. Its parameters: {', '.join(params) or '(none)'}"
                )
    for name, (shim, param_name, param) in params.items():
        if any(fnmatchcase(name, pattern) for pattern in frozen):
            param.requires_grad_(False)
            continue
        for pattern, value in learn_rate_multipliers.items():
            if fnmatchcase(name, pattern):
                shim.learn_rate_multipliers[param_name] = float(value)
                break


def named_torch_parameters(model: Model) -> Dict[str, Tuple[TorchShim, str, torch.nn.Parameter]]:
    """Every torch parameter in `model` by its `<wrapper>.<parameter>` name."""
    params: Dict[str, Tuple[TorchShim, str, torch.nn.Parameter]] = {}
    seen: Dict[str, int] = {}
    for node in model.walk():
        shims = [shim for shim in node.shims if isinstance(shim, TorchShim)]
        if not shims:
            continue
        count = seen.get(node.name, 0)
        seen[node.name] = count + 1
        prefix = node.name if count == 0 else f"{node.name}#{count}"
        for shim in shims:
            for param_name, param in shim.module.named_parameters():
                params[f"{prefix}.{param_name}"] = (shim, param_name, param)
    return params
