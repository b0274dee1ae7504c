"""Token-to-vector: hashed spaCy token attributes -> torch embeddings -> encoder."""
from typing import List, Optional

import torch
from spacy.tokens import Doc
from thinc.api import Model, chain, ragged2list
from thinc.types import Floats2d
from torch import nn

from .checks import check_size
from .convert import convert_ragged_outputs
from .encoders import CNNEncoder
from .features import hashed_token_features
from .torch_wrapper import TorchWrapper


class HashEmbedEncoder(nn.Module):
    """Sum four hashed rows per attribute, mix the attributes to `width`,
    then contextualise with `encoder` over each doc. In training, whole
    attribute vectors are dropped per token (at the caller's dropout rate), so
    the model cannot lean on memorised words alone."""

    def __init__(self, n_rows: int, n_attrs: int, width: int, encoder: nn.Module):
        super().__init__()
        self.feature_dropout = nn.Dropout(0.1)
        self.embed = nn.EmbeddingBag(n_rows, width, mode="sum")
        nn.init.normal_(self.embed.weight, std=0.1)
        self.mix = nn.Linear(n_attrs * width, width)
        self.norm = nn.LayerNorm(width)
        self.encoder = encoder

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        n_tokens, n_attrs, n_hashes = ids.shape
        vectors = self.embed(ids.reshape(n_tokens * n_attrs, n_hashes))
        vectors = vectors.reshape(n_tokens, n_attrs, self.embed.embedding_dim)
        if self.training:
            vectors = vectors * self.feature_dropout(vectors.new_ones(n_tokens, n_attrs, 1))
        vectors = vectors.reshape(n_tokens, n_attrs * self.embed.embedding_dim)
        vectors = self.norm(nn.functional.gelu(self.mix(vectors)))
        return self.encoder(vectors, lengths.long())


def build_torch_tok2vec(
    *,
    width: int = 96,
    attrs: List[str] = ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    rows: List[int] = [5000, 1000, 2500, 2500],
    encoder: Optional[nn.Module] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """"spacy-pytorch-shim.TorchTok2Vec.v1": List[Doc] -> List[Floats2d] of
    `width` columns, usable by our heads, spaCy's components and listeners."""
    arch = "spacy-pytorch-shim.TorchTok2Vec.v1"
    check_size(arch, "width", width)
    if not attrs:
        raise ValueError(f"{arch}: `attrs` must name at least one token attribute")
    for i, n_rows in enumerate(rows):
        check_size(arch, f"rows[{i}]", n_rows)
    if encoder is None:
        encoder = CNNEncoder(width, depth=4, window=1, dropout=0.1)
    encoder_width = getattr(encoder, "width", width)
    if encoder_width != width:
        raise ValueError(
            f"The tok2vec encoder's width ({encoder_width}) must equal the tok2vec "
            f"width ({width}); set both to the same value in the config"
        )
    module = HashEmbedEncoder(sum(rows), len(attrs), width, encoder)
    wrapped = TorchWrapper(
        module, convert_outputs=convert_ragged_outputs, name="torch_tok2vec_encoder", nO=width
    )
    model = chain(hashed_token_features(attrs, rows), wrapped, ragged2list())
    model.set_dim("nO", width)
    model.name = "torch_tok2vec"
    return model
