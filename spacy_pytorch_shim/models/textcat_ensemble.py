"""Text classification v3: the v2 heads plus learned n-gram vectors, averaged
per doc (fastText): a bag of n-grams shares nothing between n-grams, so an
n-gram seen a few times in training gets a poor weight; n-gram vectors put
n-grams that predict the same labels close together, which carries over to
short texts and rare wording at almost no extra cost (one more table lookup
over the same hashed ids)."""
from typing import Callable, List, Optional, Tuple

import torch
from spacy.tokens import Doc
from thinc.api import Model, add, chain, list2ragged
from thinc.types import Floats2d, Ragged
from torch import nn

from .checks import check_size, tok2vec_width
from .features import hashed_ngrams
from .resize import resize_output
from .textcat import BagOfNgrams, PoolingHead
from .torch_wrapper import TorchWrapper


class NgramVectors(nn.Module):
    """The mean of each doc's n-gram vectors, a hidden layer, label logits."""

    def __init__(self, rows: int, width: int, hidden_width: int, nO: int):
        super().__init__()
        self.embed = nn.EmbeddingBag(rows, width, mode="mean")
        nn.init.normal_(self.embed.weight, std=0.1)
        self.hidden = nn.Sequential(nn.Linear(width, hidden_width), nn.GELU(), nn.Dropout(0.0))
        self.output = nn.Linear(hidden_width, nO)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        offsets = torch.cumsum(lengths.long(), 0) - lengths.long()
        return self.output(self.hidden(self.embed(ids, offsets)))


def sum_of_ngram_heads(heads: List[Model[Ragged, Floats2d]]) -> Model[Ragged, Floats2d]:
    """The sum of the heads' outputs over the same hashed n-gram ids. Thinc's
    `add` would also sum the heads' input gradients, which do not exist for
    integer ids (the wrappers return None)."""
    return Model("sum_of_ngram_heads", _sum_forward, layers=heads, dims={"nO": heads[0].get_dim("nO")})


def _sum_forward(model: Model, ids: Ragged, is_train: bool) -> Tuple[Floats2d, Callable]:
    outputs = [head(ids, is_train) for head in model.layers]
    Y = sum(Y for Y, _ in outputs[1:]) + outputs[0][0]

    def backprop(dY: Floats2d) -> None:
        for _, head_backprop in outputs:
            head_backprop(dY)

    return Y, backprop


def build_textcat_v3(
    *,
    tok2vec: Optional[Model[List[Doc], List[Floats2d]]],
    exclusive_classes: bool,
    hidden_width: int = 128,
    ngram_size: int = 2,
    ngram_rows: int = 2**18,
    ngram_width: int = 64,
    nO: Optional[int] = None,
) -> Model[List[Doc], Floats2d]:
    """"spacy-pytorch-shim.TorchTextCat.v3": one row of label logits per doc,
    the sum of up to three heads: the bag of hashed 1..ngram_size-grams and
    the mean of their `ngram_width`-wide vectors (both over the same hashed
    ids; `ngram_width = 0` leaves the vectors out, `ngram_size = 0` both),
    and pooled token vectors (left out when tok2vec is null). The component
    applies softmax (exclusive_classes) or sigmoid."""
    arch = "spacy-pytorch-shim.TorchTextCat.v3"
    check_size(arch, "hidden_width", hidden_width)
    check_size(arch, "ngram_size", ngram_size, minimum=0)
    check_size(arch, "ngram_width", ngram_width, minimum=0)
    if ngram_size:
        check_size(arch, "ngram_rows", ngram_rows, minimum=2)  # row 0 is the bias
    if nO is not None:
        check_size(arch, "nO", nO)
    heads = []
    if tok2vec is not None:
        heads.append(
            chain(
                tok2vec,
                list2ragged(),
                TorchWrapper(
                    PoolingHead(tok2vec_width(arch, tok2vec), hidden_width, nO or 1, 0.0),
                    output_layer="output",
                    name="torch_textcat_pooling",
                ),
            )
        )
    if ngram_size:
        ngram_heads = [
            TorchWrapper(BagOfNgrams(ngram_rows, nO or 1), output_layer="output", name="torch_textcat_ngrams")
        ]
        if ngram_width:
            ngram_heads.append(
                TorchWrapper(
                    NgramVectors(ngram_rows, ngram_width, hidden_width, nO or 1),
                    output_layer="output",
                    name="torch_textcat_ngram_vectors",
                )
            )
        heads.append(
            chain(
                hashed_ngrams("LOWER", ngram_size, ngram_rows),
                sum_of_ngram_heads(ngram_heads) if len(ngram_heads) > 1 else ngram_heads[0],
            )
        )
    if not heads:
        raise ValueError(f"{arch} needs a tok2vec, ngram_size > 0, or both")
    model = add(*heads) if len(heads) > 1 else heads[0]
    model.name = "torch_textcat"
    if tok2vec is not None:
        model.set_ref("tok2vec", tok2vec)
    model.attrs["resize_output"] = resize_output
    model.attrs["exclusive_classes"] = exclusive_classes
    return model
