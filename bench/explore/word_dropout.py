"""Exploration prototype (issue 15, round 7) of TorchTok2Vec.v4's word
dropout, as first measured: on a v3 config, in training, each token's
first attribute (NORM in the NER presets) is dropped with probability
WORD_DROPOUT (default 0.3) instead of the caller's rate; the other features
keep the caller's. The same distribution as v4, with other random draws.
Loaded with `spacy train --code bench/explore/word_dropout.py`."""
import os

import torch
from torch import nn

from spacy_pytorch_shim.models import tok2vec

RATE = float(os.environ.get("WORD_DROPOUT", "0.3"))


def _mix_and_encode(self, vectors, lengths):
    n_tokens, n_features, width = vectors.shape
    if self.training:
        keep = self.feature_dropout(vectors.new_ones(n_tokens, n_features, 1))
        keep_word = (torch.rand(n_tokens, 1, device=vectors.device) >= RATE).to(vectors.dtype) / (1 - RATE)
        vectors = vectors * torch.cat([keep_word.unsqueeze(2), keep[:, 1:]], dim=1)
    vectors = self.norm(nn.functional.gelu(self.mix(vectors.reshape(n_tokens, n_features * width))))
    return self.encoder(vectors, lengths.long())


tok2vec.HashEmbedEncoder._mix_and_encode = _mix_and_encode
