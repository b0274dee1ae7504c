"""Which of a fast tokenizer's pieces belong to which spaCy token, by
character offsets, so spaCy's tokens are never re-split or re-joined."""
from typing import Sequence, Tuple

import numpy
from spacy.attrs import IDX, IS_SPACE, LENGTH
from spacy.tokens import Doc

POOLINGS = ("mean", "first", "last")


def align_pieces(doc: Doc, offsets: Sequence[Tuple[int, int]]) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """(token index, piece index) pairs, ordered by token then piece: a piece
    belongs to every token whose characters it overlaps, whitespace tokens
    only if it has nothing else (SentencePiece's "▁w" belongs to "w", not to
    a space token before it). Whitespace between tokens belongs to none, and
    a token the tokenizer gave no piece (whitespace, dropped characters) has
    no pair."""
    idx, length, is_space = doc.to_array([IDX, LENGTH, IS_SPACE]).astype("i8").T.reshape(3, -1)
    owner = numpy.repeat(numpy.arange(len(doc)), length)
    # Each token's character positions, all tokens at once.
    chars = numpy.arange(length.sum()) + numpy.repeat(idx - (numpy.cumsum(length) - length), length)
    space = numpy.repeat(is_space.astype(bool), length)
    char_token = numpy.full(len(doc.text) + 1, -1, dtype="i")
    space_token = numpy.full(len(doc.text) + 1, -1, dtype="i")
    char_token[chars[~space]] = owner[~space]
    space_token[chars[space]] = owner[space]
    offsets = numpy.asarray(offsets, dtype="i8").reshape(-1, 2)
    n_chars = numpy.maximum(offsets[:, 1] - offsets[:, 0], 0)
    piece = numpy.repeat(numpy.arange(len(offsets)), n_chars)
    chars = numpy.arange(n_chars.sum()) + numpy.repeat(offsets[:, 0] - (numpy.cumsum(n_chars) - n_chars), n_chars)
    token = char_token[chars]
    covered = numpy.zeros(len(offsets), dtype=bool)
    covered[piece[token >= 0]] = True
    token = numpy.where(covered[piece], token, space_token[chars])
    keep = token >= 0
    pairs = numpy.unique(numpy.stack([token[keep], piece[keep]], axis=1), axis=0).reshape(-1, 2)
    return pairs[:, 0].astype("i"), pairs[:, 1].astype("i")


def pool_weights(token_ids: numpy.ndarray, pooling: str) -> numpy.ndarray:
    """The weight of each (token, piece) pair, pairs sorted by token then
    piece: 1/count for "mean"; for "first"/"last", 1 on the token's first or
    last piece and 0 elsewhere."""
    if not len(token_ids):
        return numpy.zeros(0, dtype="f")
    starts = numpy.r_[True, token_ids[1:] != token_ids[:-1]]
    ends = numpy.r_[token_ids[1:] != token_ids[:-1], True]
    if pooling == "first":
        return starts.astype("f")
    if pooling == "last":
        return ends.astype("f")
    counts = numpy.bincount(token_ids)
    return (1.0 / counts[token_ids]).astype("f")
