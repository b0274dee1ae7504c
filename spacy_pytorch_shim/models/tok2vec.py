"""Token-to-vector: hashed spaCy token attributes -> torch embeddings -> encoder."""
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from spacy.ml.staticvectors import StaticVectors
from spacy.tokens import Doc
from thinc.api import ArgsKwargs, Model, chain, ragged2list, torch2xp, tuplify, xp2torch
from thinc.types import Floats2d, Ragged
from torch import nn

from .checks import check_rate, check_size
from .convert import convert_ragged_outputs
from .encoders import CNNEncoder, convolve_laid_out, end_to_end_rows
from .features import CHAR_ROWS, hashed_token_features, token_characters
from .torch_wrapper import TorchWrapper


class HashEmbedEncoder(nn.Module):
    """Sum four hashed rows per attribute, mix the attributes to `width`,
    then contextualise with `encoder` over each doc. In training, whole
    attribute vectors are dropped per token (at the caller's dropout rate), so
    the model cannot lean on memorised words alone. `word_features` (indices
    among the features) are dropped together per token with probability at
    least `word_dropout`, the word dropout of TorchTok2Vec.v4, unless the
    caller's rate is 0: then nothing is dropped."""

    def __init__(
        self, n_rows: int, n_attrs: int, width: int, encoder: nn.Module,
        word_features: Sequence[int] = (), word_dropout: float = 0.0,
    ):
        super().__init__()
        self.feature_dropout = nn.Dropout(0.1)
        self.word_features = list(word_features)
        self.word_dropout = word_dropout
        self.embed = nn.EmbeddingBag(n_rows, width, mode="sum")
        nn.init.normal_(self.embed.weight, std=0.1)
        self.mix = nn.Linear(n_attrs * width, width)
        self.norm = nn.LayerNorm(width)
        self.encoder = encoder

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self._mix_and_encode(self._embed(ids), lengths)

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        n_tokens, n_attrs, n_hashes = ids.shape
        vectors = self.embed(ids.reshape(n_tokens * n_attrs, n_hashes))
        return vectors.reshape(n_tokens, n_attrs, self.embed.embedding_dim)

    def _embed_with(self, ids: torch.Tensor, extra: List[torch.Tensor]) -> torch.Tensor:
        """The attribute vectors, then each of `extra` (n_tokens, width) as
        one more feature."""
        return torch.cat([self._embed(ids)] + [x.unsqueeze(1) for x in extra], dim=1)

    def _mix_and_encode(self, vectors: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        n_tokens, n_features, width = vectors.shape
        if self.training:
            keep = self.feature_dropout(vectors.new_ones(n_tokens, n_features, 1))
            caller_rate = self.feature_dropout.p
            if self.word_features and self.word_dropout and caller_rate:
                rate = max(self.word_dropout, caller_rate)
                keep_word = nn.functional.dropout(vectors.new_ones(n_tokens, 1, 1), rate)
                keep[:, self.word_features] = keep_word.expand(-1, len(self.word_features), -1)
            vectors = vectors * keep
        vectors = self.norm(nn.functional.gelu(self.mix(vectors.reshape(n_tokens, n_features * width))))
        return self.encoder(vectors, lengths.long())


class HashEmbedStaticEncoder(HashEmbedEncoder):
    """HashEmbedEncoder with one more feature per token: its static vector,
    projected to `width` outside torch (spaCy's StaticVectors), mixed in like
    another attribute (and dropped like one in training)."""

    def __init__(self, n_rows: int, n_attrs: int, width: int, encoder: nn.Module):
        super().__init__(n_rows, n_attrs + 1, width, encoder)

    def forward(self, ids: torch.Tensor, static: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self._mix_and_encode(self._embed_with(ids, [static]), lengths)


class CharCNN(nn.Module):
    """Each token text's character embeddings -> a convolution over 3
    characters to `width` -> max over the text's characters (Ma and Hovy
    2016). The texts are laid end to end with a zero row between them (as
    CNNEncoder lays out docs): each text is convolved as if zero-padded on
    its own, and no compute goes to padding."""

    def __init__(self, char_width: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(CHAR_ROWS, char_width)
        self.conv = nn.Conv1d(char_width, width, 3)

    def forward(self, chars: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not len(chars):  # no tokens
            return self.conv.weight.new_zeros((len(lengths), self.conv.out_channels))
        H = convolve_laid_out(self.conv, self.embed(chars), end_to_end_rows(lengths, 1), len(lengths), 1)
        text_ids = torch.repeat_interleave(torch.arange(len(lengths), device=chars.device), lengths.long())
        index = text_ids.unsqueeze(1).expand_as(H)
        return H.new_zeros(len(lengths), H.shape[1]).scatter_reduce(0, index, H, reduce="amax", include_self=False)


class HashEmbedCharEncoder(HashEmbedEncoder):
    """HashEmbedEncoder with one more feature per token, the CharCNN of its
    text, and, with `static`, the token's projected static vector: mixed in
    (and dropped in training) like the attributes."""

    def __init__(
        self, n_rows: int, n_attrs: int, width: int, encoder: nn.Module, char_width: int, static: bool,
        word_features: Sequence[int] = (), word_dropout: float = 0.0,
    ):
        super().__init__(n_rows, n_attrs + 1 + int(static), width, encoder, word_features, word_dropout)
        self.chars = CharCNN(char_width, width)

    def forward(
        self, ids: torch.Tensor, chars: torch.Tensor, char_lengths: torch.Tensor, inverse: torch.Tensor,
        lengths: torch.Tensor, static: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        per_token = self.chars(chars, char_lengths)[inverse]
        extra = [per_token] if static is None else [per_token, static]
        return self._mix_and_encode(self._embed_with(ids, extra), lengths)


def build_torch_tok2vec(
    *,
    width: int = 96,
    attrs: List[str] = ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    rows: List[int] = [5000, 1000, 2500, 2500],
    encoder: Optional[nn.Module] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """"spacy-pytorch-shim.TorchTok2Vec.v1": List[Doc] -> List[Floats2d] of
    `width` columns, usable by our heads, spaCy's components and listeners."""
    encoder = _checked_encoder("spacy-pytorch-shim.TorchTok2Vec.v1", width, attrs, rows, encoder)
    return _hash_embed_tok2vec(attrs, rows, width, encoder)


def build_torch_tok2vec_v2(
    *,
    width: int = 96,
    attrs: List[str] = ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    rows: List[int] = [5000, 1000, 2500, 2500],
    encoder: Optional[nn.Module] = None,
    include_static_vectors: bool = False,
) -> Model[List[Doc], List[Floats2d]]:
    """"spacy-pytorch-shim.TorchTok2Vec.v2": v1, plus, with
    `include_static_vectors`, each token's vector from `nlp.vocab.vectors`
    (`[initialize] vectors`, e.g. from `spacy init vectors`) as one more
    feature, as spaCy's `include_static_vectors` adds them. The table is not
    trained and not saved with the model (it is the vocab's); its projection
    to `width` is."""
    arch = "spacy-pytorch-shim.TorchTok2Vec.v2"
    encoder = _checked_encoder(arch, width, attrs, rows, encoder)
    if not include_static_vectors:
        return _hash_embed_tok2vec(attrs, rows, width, encoder)
    module = HashEmbedStaticEncoder(sum(rows), len(attrs), width, encoder)
    wrapped = TorchWrapper(
        module,
        convert_inputs=_convert_ids_and_vectors,
        convert_outputs=_convert_outputs_per_token,
        name="torch_tok2vec_encoder",
        nO=width,
    )
    features = tuplify(hashed_token_features(attrs, rows), _required_static_vectors(arch, width))
    return _tok2vec(features, wrapped, width)


def build_torch_tok2vec_v3(
    *,
    width: int = 96,
    attrs: List[str] = ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    rows: List[int] = [5000, 1000, 2500, 2500],
    encoder: Optional[nn.Module] = None,
    include_static_vectors: bool = False,
    char_width: int = 32,
    max_chars: int = 20,
) -> Model[List[Doc], List[Floats2d]]:
    """"spacy-pytorch-shim.TorchTok2Vec.v3": v2, plus a feature from each
    token's characters (`CharCNN`: `char_width`-wide character embeddings, a
    convolution over 3 characters to `width`, max-pooled; a token longer
    than `max_chars` keeps its first and last `max_chars // 2`). The hashed
    prefix and suffix see two slices of a word; the CNN sees all of its
    spelling (morphemes of disease names, misspellings): on the NER panel it
    gained 3.1 points of ents_f on ncbi_disease (docs/benchmarks.md, round 3)."""
    return _char_tok2vec(
        "spacy-pytorch-shim.TorchTok2Vec.v3", width, attrs, rows, encoder, include_static_vectors, char_width, max_chars, 0.0
    )


# Attributes whose value is the whole word: v4's word dropout drops them.
WORD_ATTRS = ("ORTH", "LOWER", "NORM", "LEMMA")


def build_torch_tok2vec_v4(
    *,
    width: int = 96,
    attrs: List[str] = ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    rows: List[int] = [5000, 1000, 2500, 2500],
    encoder: Optional[nn.Module] = None,
    include_static_vectors: bool = False,
    char_width: int = 32,
    max_chars: int = 20,
    word_dropout: float = 0.3,
) -> Model[List[Doc], List[Floats2d]]:
    """"spacy-pytorch-shim.TorchTok2Vec.v4": v3 plus word dropout (Lample et
    al. 2016's training for unknown words): in training, each token's
    whole-word attributes (ORTH, LOWER, NORM, LEMMA among `attrs`) are
    dropped together with probability `word_dropout` (or the caller's
    dropout rate, if higher; a rate of 0 drops nothing), so the model learns to tag a word from its
    spelling, shape and context, as it must for the words it has not seen.
    On the NER panel 0.3, set before measuring, gained on all three sets
    (docs/benchmarks.md, round 7). `word_dropout = 0` builds v3."""
    arch = "spacy-pytorch-shim.TorchTok2Vec.v4"
    check_rate(arch, "word_dropout", word_dropout)
    if word_dropout and not any(attr.upper() in WORD_ATTRS for attr in attrs):
        raise ValueError(
            f"{arch}: `word_dropout` ({word_dropout}) drops the whole-word attributes "
            f"({', '.join(WORD_ATTRS)}), but `attrs` ({list(attrs)}) has none; add one or set word_dropout = 0"
        )
    return _char_tok2vec(arch, width, attrs, rows, encoder, include_static_vectors, char_width, max_chars, word_dropout)


def _char_tok2vec(
    arch: str, width: int, attrs: List[str], rows: List[int], encoder: Optional[nn.Module],
    include_static_vectors: bool, char_width: int, max_chars: int, word_dropout: float,
) -> Model[List[Doc], List[Floats2d]]:
    encoder = _checked_encoder(arch, width, attrs, rows, encoder)
    check_size(arch, "char_width", char_width)
    check_size(arch, "max_chars", max_chars, minimum=2)
    word_features = [i for i, attr in enumerate(attrs) if attr.upper() in WORD_ATTRS]
    module = HashEmbedCharEncoder(
        sum(rows), len(attrs), width, encoder, char_width, include_static_vectors, word_features, word_dropout
    )
    wrapped = TorchWrapper(
        module,
        convert_inputs=_convert_ids_chars_and_vectors,
        convert_outputs=_convert_outputs_per_token,
        name="torch_tok2vec_encoder",
        nO=width,
    )
    layers = [hashed_token_features(attrs, rows), token_characters(max_chars)]
    if include_static_vectors:
        layers.append(_required_static_vectors(arch, width))
    return _tok2vec(tuplify(*layers), wrapped, width)


def _checked_encoder(arch: str, width: int, attrs: List[str], rows: List[int], encoder: Optional[nn.Module]) -> nn.Module:
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
    return encoder


def _hash_embed_tok2vec(attrs: List[str], rows: List[int], width: int, encoder: nn.Module) -> Model[List[Doc], List[Floats2d]]:
    module = HashEmbedEncoder(sum(rows), len(attrs), width, encoder)
    wrapped = TorchWrapper(module, convert_outputs=convert_ragged_outputs, name="torch_tok2vec_encoder", nO=width)
    return _tok2vec(hashed_token_features(attrs, rows), wrapped, width)


def _tok2vec(features: Model, wrapped: Model, width: int) -> Model[List[Doc], List[Floats2d]]:
    model = chain(features, wrapped, ragged2list())
    model.set_dim("nO", width)
    model.name = "torch_tok2vec"
    return model


def _required_static_vectors(arch: str, width: int) -> Model[List[Doc], Ragged]:
    """spaCy's StaticVectors (a trained projection of the vocab's vectors),
    whose initialize fails clearly when the vocab has no vectors."""
    vectors = StaticVectors(nO=width, dropout=None)

    def init(model: Model, X: Optional[List[Doc]] = None, Y: Any = None) -> None:
        if X is not None and len(X) and X[0].vocab.vectors.shape[0] * X[0].vocab.vectors.shape[1] == 0:
            raise ValueError(
                f"{arch} has include_static_vectors = true, but the pipeline's vocab has no "
                f"vectors (nlp.vocab.vectors is empty): set [initialize] vectors to a pipeline "
                f"with vectors or a directory written by `spacy init vectors`, or set "
                f"include_static_vectors = false"
            )
        vectors.initialize(X=X)

    return Model("static_vectors", lambda model, docs, is_train: vectors(docs, is_train), init=init, layers=[vectors])


def _convert_ids_and_vectors(model: Model, X: Tuple[Ragged, Ragged], is_train: bool) -> Tuple[ArgsKwargs, Callable]:
    """(hashed ids, projected static vectors) -> the module's (ids, static,
    lengths); the gradient goes back to the projection only."""
    ids, static = X
    device = model.shims[0].device
    static_t = xp2torch(static.dataXd, requires_grad=is_train, device=device)
    args = (xp2torch(ids.dataXd, device=device), static_t, xp2torch(ids.lengths, device=device))

    def backprop(_: Any) -> Tuple[None, Ragged]:
        return None, _static_gradient(model, static, static_t)

    return ArgsKwargs(args=args, kwargs={}), backprop


def _convert_ids_chars_and_vectors(model: Model, X: Tuple, is_train: bool) -> Tuple[ArgsKwargs, Callable]:
    """(hashed ids, (chars, inverse)[, projected static vectors]) -> the
    module's (ids, chars, char lengths, inverse, lengths[, static]); a
    gradient goes back to the static vectors' projection only."""
    ids, (chars, inverse), *static = X
    device = model.shims[0].device
    arrays = (ids.dataXd, chars.dataXd, chars.lengths, inverse, ids.lengths)
    args = [xp2torch(a, device=device) for a in arrays]
    if not static:
        return ArgsKwargs(args=tuple(args), kwargs={}), lambda _: (None, None)
    static_t = xp2torch(static[0].dataXd, requires_grad=is_train, device=device)

    def backprop(_: Any) -> Tuple[None, None, Ragged]:
        return None, None, _static_gradient(model, static[0], static_t)

    return ArgsKwargs(args=(*args, static_t), kwargs={}), backprop


def _static_gradient(model: Model, static: Ragged, static_t: torch.Tensor) -> Ragged:
    """The gradient the module left on the projected static vectors (zeros
    when it left none), for StaticVectors' backprop."""
    grad = static.dataXd * 0 if static_t.grad is None else torch2xp(static_t.grad, ops=model.ops)
    return Ragged(grad, static.lengths)


def _convert_outputs_per_token(model: Model, X_Ytorch: Tuple[Tuple, Any], is_train: bool) -> Tuple[Ragged, Callable]:
    """Ragged outputs aligned with the first input, the hashed ids."""
    X, Ytorch = X_Ytorch
    return convert_ragged_outputs(model, (X[0], Ytorch), is_train)
