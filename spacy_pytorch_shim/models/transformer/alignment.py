"""Which of a fast tokenizer's pieces belong to which spaCy token, by
character offsets, so spaCy's tokens are never re-split or re-joined."""
from typing import List, Sequence, Tuple

import numpy
from spacy.tokens import Doc

POOLINGS = ("mean", "first", "last")


def align_pieces(doc: Doc, offsets: Sequence[Tuple[int, int]]) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """(token index, piece index) pairs, ordered by token then piece: a piece
    belongs to every token whose characters it overlaps, whitespace tokens
    only if it has nothing else (SentencePiece's "▁w" belongs to "w", not to
    a space token before it). Whitespace between tokens belongs to none, and
    a token the tokenizer gave no piece (whitespace, dropped characters) has
    no pair."""
    char_token = numpy.full(len(doc.text) + 1, -1, dtype="i")
    space_token = numpy.full(len(doc.text) + 1, -1, dtype="i")
    for token in doc:
        chars = space_token if token.is_space else char_token
        chars[token.idx : token.idx + len(token.text)] = token.i
    tokens: List[numpy.ndarray] = []
    pieces: List[numpy.ndarray] = []
    for piece, (start, end) in enumerate(offsets):
        if end <= start:
            continue
        found = numpy.unique(char_token[start:end])
        found = found[found >= 0]
        if not len(found):
            found = numpy.unique(space_token[start:end])
            found = found[found >= 0]
        tokens.append(found)
        pieces.append(numpy.full(len(found), piece, dtype="i"))
    if not tokens:
        return numpy.zeros(0, dtype="i"), numpy.zeros(0, dtype="i")
    token_ids = numpy.concatenate(tokens)
    piece_ids = numpy.concatenate(pieces)
    order = numpy.lexsort((piece_ids, token_ids))
    return token_ids[order], piece_ids[order]


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
