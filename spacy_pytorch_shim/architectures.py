"""Registered architectures. Each name is declared in setup.cfg's entry points,
so a config can use it after `pip install` with no import in user code."""
from typing import Any, Optional

import torch
from thinc.api import Model

from .models import TorchWrapper
from .models.encoders import (
    build_bilstm_encoder,
    build_bilstm_encoder_v2,
    build_cnn_encoder,
    build_cnn_encoder_v2,
)
from .models.ner import build_ner_tagger, build_ner_tagger_v2
from .models.param_groups import with_param_groups
from .models.textcat import build_textcat, build_textcat_v2, build_textcat_v3, build_textcat_v4
from .models.tok2vec import build_torch_tok2vec, build_torch_tok2vec_v2, build_torch_tok2vec_v3, build_torch_tok2vec_v4


def torch_wrapper_v1(
    module: torch.nn.Module,
    *,
    output_layer: Optional[str] = None,
    input_layer: Optional[str] = None,
    output_bias_fill: float = 0.0,
    output_dropout: bool = False,
    mixed_precision: bool = False,
) -> Model[Any, Any]:
    """"spacy-pytorch-shim.TorchWrapper.v1": wrap a torch module built by
    another registered function (the `module` block of the config)."""
    return TorchWrapper(
        module,
        output_layer=output_layer,
        input_layer=input_layer,
        output_bias_fill=output_bias_fill,
        output_dropout=output_dropout,
        mixed_precision=mixed_precision,
    )


torch_tok2vec_v1 = build_torch_tok2vec
cnn_encoder_v1 = build_cnn_encoder
bilstm_encoder_v1 = build_bilstm_encoder
torch_ner_tagger_v1 = build_ner_tagger
torch_textcat_v1 = build_textcat
param_groups_v1 = with_param_groups
cnn_encoder_v2 = build_cnn_encoder_v2
bilstm_encoder_v2 = build_bilstm_encoder_v2
torch_ner_tagger_v2 = build_ner_tagger_v2
torch_textcat_v2 = build_textcat_v2
torch_tok2vec_v2 = build_torch_tok2vec_v2
torch_tok2vec_v3 = build_torch_tok2vec_v3
torch_textcat_v3 = build_textcat_v3
torch_tok2vec_v4 = build_torch_tok2vec_v4
torch_textcat_v4 = build_textcat_v4
