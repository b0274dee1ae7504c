"""Text classification: pooled token vectors plus a bag of hashed n-grams."""
from typing import Callable, List, Optional, Tuple

import torch
from spacy.tokens import Doc
from thinc.api import ArgsKwargs, Model, add, chain, list2ragged, xp2torch
from thinc.types import Floats2d
from torch import nn

from .checks import check_rate, check_size, tok2vec_width
from .features import hashed_ngrams, hashed_ngrams_and_subwords
from .resize import resize_output
from .torch_wrapper import TorchWrapper


class PoolingHead(nn.Module):
    """Mean- and max-pool each doc's token vectors, then a hidden layer."""

    def __init__(self, nI: int, hidden_width: int, nO: int, dropout: float):
        super().__init__()
        self.hidden = nn.Sequential(
            nn.Linear(2 * nI, hidden_width), nn.GELU(), nn.Dropout(dropout)
        )
        self.output = nn.Linear(hidden_width, nO)

    def forward(self, X: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(torch.cat(self.pool(X, lengths), dim=1)))

    def pool(self, X: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Each doc's mean and max of its token vectors (zeros for no tokens)."""
        lengths = lengths.long()
        n_docs = len(lengths)
        if not len(X):  # no tokens: Thinc's flatten of no docs has no width either
            X = X.new_zeros(0, self.hidden[0].in_features // 2)
        doc_ids = torch.repeat_interleave(torch.arange(n_docs, device=X.device), lengths)
        index = doc_ids.unsqueeze(1).expand_as(X)
        sums = X.new_zeros(n_docs, X.shape[1]).index_add_(0, doc_ids, X)
        means = sums / lengths.clamp(min=1).unsqueeze(1).to(X.dtype)
        maxes = X.new_zeros(n_docs, X.shape[1]).scatter_reduce(
            0, index, X, reduce="amax", include_self=False
        )
        return means, maxes


class NormalizedPoolingHead(PoolingHead):
    """PoolingHead whose mean and max vectors are each layer-normalized before
    the hidden layer. A pretrained encoder's token vectors can be small on
    average with a few large components (all-MiniLM-L6-v2: mean |x| 0.07
    pooled by mean, 0.93 by max): unnormalized, the hidden layer barely sees
    the mean, the pooling the encoder was trained for."""

    def __init__(self, nI: int, hidden_width: int, nO: int, dropout: float):
        super().__init__(nI, hidden_width, nO, dropout)
        self.norm_mean = nn.LayerNorm(nI)
        self.norm_max = nn.LayerNorm(nI)

    def forward(self, X: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        means, maxes = self.pool(X, lengths)
        return self.output(self.hidden(torch.cat([self.norm_mean(means), self.norm_max(maxes)], dim=1)))


class BagOfNgrams(nn.Module):
    """A linear model over hashed n-gram counts: one row of logits per n-gram.
    The table's gradient is sparse (a batch touches few of its rows); the
    shim steps it densely, as Thinc's optimizer would."""

    def __init__(self, rows: int, nO: int):
        super().__init__()
        self.output = nn.EmbeddingBag(rows, nO, mode="sum", sparse=True)
        nn.init.zeros_(self.output.weight)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.output(ids, _offsets(lengths))


class BagOfNgramsAndSubwords(BagOfNgrams):
    """BagOfNgrams plus, per token, the mean of its subwords' rows of the same
    table (fastText): a rare or misspelt word shares rows with the words it
    looks like, and each token's subwords weigh as much as one n-gram."""

    def forward(
        self,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        subwords: torch.Tensor,
        subword_lengths: torch.Tensor,
        words: torch.Tensor,
        inverse: torch.Tensor,
        doc_lengths: torch.Tensor,
    ) -> torch.Tensor:
        """ids/lengths: each doc's row 0 and its longer n-grams; per distinct
        text, its subword rows and its word row; per token, its text."""
        lengths, doc_lengths = lengths.long(), doc_lengths.long()
        offsets = _offsets(lengths)
        scale = self._doc_scale(doc_lengths)
        id_weights = token_weights = None
        if scale is not None:
            id_weights = torch.repeat_interleave(scale, lengths)
            id_weights[offsets] = 1.0  # each doc's bag starts with its bias row
            token_weights = torch.repeat_interleave(scale, doc_lengths)
        weight, sparse = self.output.weight, self.output.sparse
        per_text = nn.functional.embedding_bag(
            subwords, weight, _offsets(subword_lengths), mode="mean", sparse=sparse
        ) + nn.functional.embedding(words, weight, sparse=sparse)
        per_doc = nn.functional.embedding_bag(
            inverse, per_text, _offsets(doc_lengths), mode="sum", per_sample_weights=token_weights
        )
        return self.output(ids, offsets, per_sample_weights=id_weights) + per_doc

    def _doc_scale(self, doc_lengths: torch.Tensor) -> Optional[torch.Tensor]:
        """Per doc, the factor of its n-gram and subword rows (the bias row
        apart); None: plain sums."""
        return None


class LengthScaledBagOfNgramsAndSubwords(BagOfNgramsAndSubwords):
    """BagOfNgramsAndSubwords whose sum over a doc's n-grams and subwords
    (the bias row apart) is divided by the square root of its token count:
    a long doc's logits no longer grow with its length, so the loss of a
    500-word review does not saturate (and its gradient vanish) long before
    a 10-word one's."""

    def _doc_scale(self, doc_lengths: torch.Tensor) -> Optional[torch.Tensor]:
        return doc_lengths.clamp(min=1).to(self.output.weight.dtype).rsqrt()


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    lengths = lengths.long()
    return torch.cumsum(lengths, 0) - lengths


def build_textcat(
    *,
    tok2vec: Optional[Model[List[Doc], List[Floats2d]]],
    exclusive_classes: bool,
    hidden_width: int = 128,
    dropout: float = 0.1,
    ngram_size: int = 2,
    ngram_rows: int = 2**16,
    nO: Optional[int] = None,
) -> Model[List[Doc], Floats2d]:
    """"spacy-pytorch-shim.TorchTextCat.v1": one row of label logits per doc,
    the sum of a pooled token-vector head (left out when tok2vec is null) and
    a bag of hashed 1..ngram_size-grams (left out when ngram_size is 0). The
    component applies softmax (exclusive_classes) or sigmoid."""
    return _build_textcat(
        "spacy-pytorch-shim.TorchTextCat.v1", tok2vec, exclusive_classes, hidden_width, dropout, ngram_size, ngram_rows, nO
    )


def build_textcat_v2(
    *,
    tok2vec: Optional[Model[List[Doc], List[Floats2d]]],
    exclusive_classes: bool,
    hidden_width: int = 128,
    ngram_size: int = 2,
    ngram_rows: int = 2**16,
    nO: Optional[int] = None,
) -> Model[List[Doc], Floats2d]:
    """"spacy-pytorch-shim.TorchTextCat.v2": v1 without `dropout`, which the
    caller's rate (`[training] dropout`) always replaced in training."""
    return _build_textcat(
        "spacy-pytorch-shim.TorchTextCat.v2", tok2vec, exclusive_classes, hidden_width, 0.0, ngram_size, ngram_rows, nO
    )


def build_textcat_v3(
    *,
    tok2vec: Optional[Model[List[Doc], List[Floats2d]]],
    exclusive_classes: bool,
    hidden_width: int = 128,
    ngram_size: int = 1,
    ngram_rows: int = 2**18,
    subword_min: int = 3,
    subword_max: int = 5,
    nO: Optional[int] = None,
) -> Model[List[Doc], Floats2d]:
    """"spacy-pytorch-shim.TorchTextCat.v3": v2 whose bag also holds each
    token's character n-grams, subword_min..subword_max long (fastText's
    subwords), averaged per token; it needs ngram_size >= 1."""
    return _build_subword_textcat(
        "spacy-pytorch-shim.TorchTextCat.v3", BagOfNgramsAndSubwords, tok2vec, exclusive_classes,
        hidden_width, ngram_size, ngram_rows, subword_min, subword_max, nO,
    )


def build_textcat_v4(
    *,
    tok2vec: Optional[Model[List[Doc], List[Floats2d]]],
    exclusive_classes: bool,
    hidden_width: int = 128,
    ngram_size: int = 1,
    ngram_rows: int = 2**18,
    subword_min: int = 3,
    subword_max: int = 5,
    nO: Optional[int] = None,
) -> Model[List[Doc], Floats2d]:
    """"spacy-pytorch-shim.TorchTextCat.v4": v3 whose bag divides each doc's
    sum of n-gram and subword rows (its bias row apart) by the square root
    of the doc's token count, so that logits do not grow with length."""
    return _build_subword_textcat(
        "spacy-pytorch-shim.TorchTextCat.v4", LengthScaledBagOfNgramsAndSubwords, tok2vec, exclusive_classes,
        hidden_width, ngram_size, ngram_rows, subword_min, subword_max, nO,
    )


def build_textcat_v5(
    *,
    tok2vec: Optional[Model[List[Doc], List[Floats2d]]],
    exclusive_classes: bool,
    hidden_width: int = 128,
    ngram_size: int = 1,
    ngram_rows: int = 2**18,
    subword_min: int = 3,
    subword_max: int = 5,
    nO: Optional[int] = None,
) -> Model[List[Doc], Floats2d]:
    """"spacy-pytorch-shim.TorchTextCat.v5": v4 whose mean- and max-pooled
    token vectors are each layer-normalized before the hidden layer (for a
    pretrained encoder's vectors, whose scales differ)."""
    return _build_subword_textcat(
        "spacy-pytorch-shim.TorchTextCat.v5", LengthScaledBagOfNgramsAndSubwords, tok2vec, exclusive_classes,
        hidden_width, ngram_size, ngram_rows, subword_min, subword_max, nO, NormalizedPoolingHead,
    )


def build_textcat_v6(
    *,
    tok2vec: Optional[Model[List[Doc], List[Floats2d]]],
    exclusive_classes: bool,
    hidden_width: int = 128,
    ngram_size: int = 1,
    ngram_rows: int = 2**18,
    subword_min: int = 3,
    subword_max: int = 5,
    nO: Optional[int] = None,
) -> Model[List[Doc], Floats2d]:
    """"spacy-pytorch-shim.TorchTextCat.v6": v5's normalized pooled head with
    v3's bag of plain sums, for multi-label classes: under sigmoids and a
    0.5 threshold, length-scaled logits of rare labels seldom cross it."""
    return _build_subword_textcat(
        "spacy-pytorch-shim.TorchTextCat.v6", BagOfNgramsAndSubwords, tok2vec, exclusive_classes,
        hidden_width, ngram_size, ngram_rows, subword_min, subword_max, nO, NormalizedPoolingHead,
    )


def _build_subword_textcat(
    arch: str,
    bag: type,
    tok2vec: Optional[Model],
    exclusive_classes: bool,
    hidden_width: int,
    ngram_size: int,
    ngram_rows: int,
    subword_min: int,
    subword_max: int,
    nO: Optional[int],
    head: type = PoolingHead,
) -> Model[List[Doc], Floats2d]:
    check_size(arch, "ngram_size", ngram_size)
    check_size(arch, "subword_min", subword_min)
    check_size(arch, "subword_max", subword_max, minimum=subword_min)
    return _build_textcat(
        arch, tok2vec, exclusive_classes, hidden_width, 0.0, ngram_size, ngram_rows, nO, (subword_min, subword_max), bag, head
    )


def _build_textcat(
    arch: str,
    tok2vec: Optional[Model],
    exclusive_classes: bool,
    hidden_width: int,
    dropout: float,
    ngram_size: int,
    ngram_rows: int,
    nO: Optional[int],
    subwords: Optional[Tuple[int, int]] = None,
    bag: type = BagOfNgramsAndSubwords,
    head: type = PoolingHead,
) -> Model[List[Doc], Floats2d]:
    """The heads of every version; `bag` is the module of the bag of n-grams
    and subwords (`subwords` given), `head` the module over the token vectors."""
    check_size(arch, "hidden_width", hidden_width)
    check_rate(arch, "dropout", dropout)
    check_size(arch, "ngram_size", ngram_size, minimum=0)
    if ngram_size:
        check_size(arch, "ngram_rows", ngram_rows, minimum=2)  # row 0 is the bias
    if nO is not None:
        check_size(arch, "nO", nO)
    heads = []
    if tok2vec is not None:
        width = tok2vec_width(arch, tok2vec)
        heads.append(
            chain(
                tok2vec,
                list2ragged(),
                TorchWrapper(
                    head(width, hidden_width, nO or 1, dropout),
                    output_layer="output",
                    name="torch_textcat_pooling",
                ),
            )
        )
    if ngram_size and subwords:
        heads.append(
            chain(
                hashed_ngrams_and_subwords("LOWER", ngram_size, ngram_rows, *subwords),
                TorchWrapper(
                    bag(ngram_rows, nO or 1),
                    output_layer="output",
                    convert_inputs=_convert_ngrams_and_subwords,
                    name="torch_textcat_ngrams",
                ),
            )
        )
    elif ngram_size:
        heads.append(
            chain(
                hashed_ngrams("LOWER", ngram_size, ngram_rows),
                TorchWrapper(
                    BagOfNgrams(ngram_rows, nO or 1),
                    output_layer="output",
                    name="torch_textcat_ngrams",
                ),
            )
        )
    if not heads:
        raise ValueError("TorchTextCat needs a tok2vec, ngram_size > 0, or both")
    model = add(*heads) if len(heads) > 1 else heads[0]
    model.name = "torch_textcat"
    if tok2vec is not None:
        model.set_ref("tok2vec", tok2vec)
    model.attrs["resize_output"] = resize_output
    model.attrs["exclusive_classes"] = exclusive_classes
    return model


def _convert_ngrams_and_subwords(model: Model, X: Tuple, is_train: bool) -> Tuple[ArgsKwargs, Callable]:
    """(n-gram ids, (subwords, words, inverse, doc lengths)) -> the module's
    seven integer arguments; nothing to backpropagate into."""
    ngrams, (subwords, words, inverse, doc_lengths) = X
    device = model.shims[0].device
    arrays = (ngrams.dataXd, ngrams.lengths, subwords.dataXd, subwords.lengths, words, inverse, doc_lengths)
    return ArgsKwargs(args=tuple(xp2torch(a, device=device) for a in arrays), kwargs={}), lambda _: (None, None)
