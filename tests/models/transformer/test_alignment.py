"""Pieces to tokens by character offsets, pooling weights, windows and
piece-bounded batches: the bookkeeping, without an encoder."""
import numpy
import pytest
import spacy

from spacy_pytorch_shim.models.transformer.alignment import align_pieces, pool_weights
from spacy_pytorch_shim.models.transformer.windows import best_windows, group_windows, plan_windows


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("en")


def pairs(doc, offsets):
    tokens, pieces = align_pieces(doc, offsets)
    return list(zip(tokens.tolist(), pieces.tolist()))


def test_pieces_align_to_the_tokens_whose_characters_they_cover(nlp):
    doc = nlp("Hello  world")  # tokens: Hello, " " (a space token), world
    assert [t.text for t in doc] == ["Hello", " ", "world"]
    # WordPiece-like: he ##llo | wor ##ld
    assert pairs(doc, [(0, 2), (2, 5), (7, 10), (10, 12)]) == [(0, 0), (0, 1), (2, 2), (2, 3)]
    # SentencePiece: "▁world" covers the space token's character too; it belongs to "world".
    assert pairs(doc, [(0, 5), (6, 12)]) == [(0, 0), (2, 1)]
    # A piece of nothing but the space token's character belongs to it.
    assert pairs(doc, [(0, 5), (6, 7), (7, 12)]) == [(0, 0), (1, 1), (2, 2)]
    # Empty offsets (special tokens) and whitespace between tokens belong to no token.
    assert pairs(doc, [(0, 0), (5, 6), (7, 12)]) == [(2, 2)]


def test_a_piece_over_two_tokens_belongs_to_both_and_a_token_may_have_none(nlp):
    doc = nlp("can't stop")
    assert [t.text for t in doc] == ["ca", "n't", "stop"]
    tokens, pieces = align_pieces(doc, [(0, 4), (4, 5)])  # "can'" "t"; "stop" dropped
    assert list(zip(tokens.tolist(), pieces.tolist())) == [(0, 0), (1, 0), (1, 1)]
    assert 2 not in tokens


def test_no_tokens_or_no_pieces(nlp):
    assert pairs(nlp(""), []) == []
    assert pairs(nlp("word"), []) == []


def test_pool_weights():
    tokens = numpy.array([0, 0, 0, 2, 3, 3], dtype="i")
    assert pool_weights(tokens, "mean").tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1, 0.5, 0.5])
    assert pool_weights(tokens, "first").tolist() == [1, 0, 0, 1, 1, 0]
    assert pool_weights(tokens, "last").tolist() == [0, 0, 1, 1, 0, 1]


@pytest.mark.parametrize("n,window,stride", [(1, 8, 4), (8, 8, 4), (9, 8, 4), (50, 8, 6), (50, 16, 1)])
def test_windows_cover_every_piece_and_end_at_the_end(n, window, stride):
    spans = plan_windows(n, window, stride)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(end - start == min(window, n) for start, end in spans)
    covered = numpy.zeros(n, dtype=bool)
    for (start, end), following in zip(spans, spans[1:] + [None]):
        covered[start:end] = True
        if following:
            assert 0 < following[0] - start <= stride
    assert covered.all()
    assert plan_windows(0, window, stride) == []


def test_each_span_takes_the_window_where_it_has_most_context():
    spans = plan_windows(20, 8, 4)  # (0,8) (4,12) (8,16) (12,20)
    first = numpy.array([0, 6, 7, 9, 19, 5, 6])
    last = numpy.array([0, 6, 7, 9, 19, 9, 13])
    # piece 0: only window 0; 6: window 1 (2 pieces to its nearer cut) beats window 0
    # (1; its start is the doc's, not a cut); 7: window 1 (3) vs window 0 (0);
    # 9: window 1 (2) vs window 2 (1); 19: the last; pieces 5..9: only window 1
    # holds them all; 6..13: no window does.
    assert best_windows(first, last, spans, 20).tolist() == [0, 1, 1, 1, 3, 1, -1]


def test_groups_are_bounded_by_padded_pieces_longest_first():
    lengths = [5, 30, 8, 8, 2, 100, 7, 4, 4, 4, 4, 4, 4, 4, 4]
    groups = group_windows(lengths, 32)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert groups[0] == [5]  # longer than the bound: alone
    for group in groups:
        longest = max(lengths[i] for i in group)
        assert longest * len(group) <= 32 or len(group) == 1
        assert [lengths[i] for i in group] == sorted((lengths[i] for i in group), reverse=True)
    # A window much shorter than its group's longest starts a group of its
    # own (little padding): 2 is not with the 4s.
    assert [[lengths[i] for i in group] for group in groups] == [
        [100], [30], [8, 8, 7], [5, 4, 4, 4, 4, 4], [4, 4, 4], [2]]
