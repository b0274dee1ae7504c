"""The BILUO tag layout of `torch_ner` and the decoder of its tag scores into
valid entity spans.

Layout: column 0 is "O", then four columns per label, in label order:
B-label, I-label, L-label, U-label. Everything that maps between labels and
tag columns goes through `n_tags`, `tag_names`, `tag_column` and `tag_mask`.
"""
from typing import List, Optional, Sequence, Tuple

import numpy

TAGS_PER_LABEL = ("B", "I", "L", "U")
# Positions within a span, as the decoder numbers them (0 is "O").
O, B, I, L, U = range(5)
# Docs decoded together: similar lengths, so little padding.
DECODE_BATCH = 64


def n_tags(n_labels: int) -> int:
    """Columns of tag scores for `n_labels` labels."""
    return 1 + len(TAGS_PER_LABEL) * n_labels


def tag_names(labels: Sequence[str]) -> List[str]:
    """"O", then B/I/L/U-label per label: the name of every column."""
    return ["O"] + [f"{t}-{label}" for label in labels for t in TAGS_PER_LABEL]


def tag_column(label_index, position):
    """The column of position B, I, L or U (1..4) of a label (ints or arrays)."""
    return 1 + len(TAGS_PER_LABEL) * label_index + (position - 1)


def tag_mask(label_mask: Optional[numpy.ndarray]) -> Optional[numpy.ndarray]:
    """Boolean mask over the columns from one over the labels ("O" never masked)."""
    if label_mask is None:
        return None
    return numpy.concatenate([[False], numpy.repeat(label_mask, len(TAGS_PER_LABEL))])


def biluo_constraints(n_labels: int) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Log-space transition scores (0 allowed, -inf not) between tags, and
    which tags may start and end a doc."""
    labels = numpy.arange(n_labels)
    begin, inside, last, unit = (tag_column(labels, p) for p in (B, I, L, U))
    outside_like = numpy.concatenate([[0], last, unit])  # states after which a new span may start
    may_start = numpy.concatenate([[0], begin, unit])
    size = n_tags(n_labels)
    allowed = numpy.zeros((size, size), dtype=bool)
    allowed[numpy.ix_(outside_like, may_start)] = True
    for b, i, l in zip(begin, inside, last):
        allowed[numpy.ix_([b, i], [i, l])] = True
    start = numpy.zeros(size, dtype=bool)
    start[may_start] = True
    end = numpy.zeros(size, dtype=bool)
    end[outside_like] = True
    to_log = lambda a: numpy.where(a, 0.0, -numpy.inf).astype("float32")
    return to_log(allowed), to_log(start), to_log(end)


def decode_biluo(log_probs: List[numpy.ndarray], n_labels: int) -> List[numpy.ndarray]:
    """Valid BILUO tag ids per doc, spans first and labels second: the best
    valid sequence of positions (O, B, I, L, U), each scored by its
    probability summed over the labels, then per span the label whose tags
    score best. A token that is surely in some entity, with its probability
    spread over similar labels (person / group / corporation), still starts
    one, where a Viterbi over the full tags would pick O: on wnut17 this
    raised test F from 0.158 to 0.180 (btc 0.673 -> 0.672)."""
    if n_labels == 0:
        return [numpy.zeros((len(x),), dtype="int32") for x in log_probs]
    positions = [_position_log_probs(x, n_labels) for x in log_probs]
    return [
        _label_spans(x, segmentation, n_labels)
        for x, segmentation in zip(log_probs, viterbi_biluo(positions, 1))
    ]


def _position_log_probs(log_probs: numpy.ndarray, n_labels: int) -> numpy.ndarray:
    """(n_tokens, n_tags) tag log-probs -> (n_tokens, 5) log-probs of O, B,
    I, L, U whatever the label."""
    per_label = log_probs[:, 1:].reshape(len(log_probs), n_labels, len(TAGS_PER_LABEL))
    return numpy.concatenate([log_probs[:, :1], numpy.logaddexp.reduce(per_label, axis=1)], axis=1)


def _label_spans(log_probs: numpy.ndarray, positions: numpy.ndarray, n_labels: int) -> numpy.ndarray:
    """Full tag ids from a position sequence (0 O, 1 B, 2 I, 3 L, 4 U): each
    span takes the label with the highest summed log-prob of its tags."""
    tags = numpy.zeros(len(positions), dtype="int32")
    inside = numpy.flatnonzero(positions > O)
    if not len(inside):
        return tags
    columns = tag_column(numpy.arange(n_labels)[None, :], positions[inside][:, None])
    token_scores = numpy.take_along_axis(log_probs[inside], columns, axis=1)
    # Spans start at B and U; entity tokens are contiguous within a span.
    is_start = numpy.isin(positions[inside], (B, U))
    labels = numpy.add.reduceat(token_scores, numpy.flatnonzero(is_start), axis=0).argmax(axis=1)
    span_of_token = numpy.cumsum(is_start) - 1
    tags[inside] = columns[numpy.arange(len(inside)), labels[span_of_token]]
    return tags


def viterbi_biluo(log_probs: List[numpy.ndarray], n_labels: int) -> List[numpy.ndarray]:
    """The most probable tag sequence per doc that is valid BILUO."""
    trans, start, end = biluo_constraints(n_labels)
    lengths = numpy.asarray([len(x) for x in log_probs])
    results: List[numpy.ndarray] = [numpy.zeros((n,), dtype="int32") for n in lengths]
    order = [i for i in numpy.argsort(lengths, kind="stable") if lengths[i] > 0]
    for first in range(0, len(order), DECODE_BATCH):
        group = order[first : first + DECODE_BATCH]
        for i, tags in zip(group, _viterbi_batch([log_probs[i] for i in group], trans, start, end)):
            results[i] = tags
    return results


def _viterbi_batch(log_probs: List[numpy.ndarray], trans, start, end) -> List[numpy.ndarray]:
    lengths = numpy.asarray([len(x) for x in log_probs])
    n_docs, n_steps, n_tags = len(log_probs), int(lengths.max()), trans.shape[0]
    emissions = numpy.zeros((n_docs, n_steps, n_tags), dtype="float32")
    for i, x in enumerate(log_probs):
        emissions[i, : len(x)] = x
    back = numpy.zeros((n_docs, n_steps, n_tags), dtype="int32")
    best = emissions[:, 0] + start
    for t in range(1, n_steps):
        candidates = best[:, :, None] + trans[None]
        back[:, t] = candidates.argmax(axis=1)
        stepped = candidates.max(axis=1) + emissions[:, t]
        active = (t < lengths)[:, None]
        best = numpy.where(active, stepped, best)
    last = (best + end).argmax(axis=1)
    tags = numpy.zeros((n_docs, n_steps), dtype="int32")
    current = last.copy()
    rows = numpy.arange(n_docs)
    for t in range(n_steps - 1, -1, -1):
        inside = t < lengths - 1
        current = numpy.where(t == lengths - 1, last, numpy.where(inside, back[rows, numpy.minimum(t + 1, n_steps - 1), current], current))
        tags[:, t] = current
    return [tags[i, :n] for i, n in enumerate(lengths)]


def entity_spans(tags: numpy.ndarray) -> List[Tuple[int, int, int]]:
    """(start, end, label index) of each entity in a valid tag id sequence."""
    inside = numpy.flatnonzero(tags > 0)
    position = (tags[inside] - 1) % len(TAGS_PER_LABEL) + 1
    labels = (tags[inside] - 1) // len(TAGS_PER_LABEL)
    starts = inside[numpy.isin(position, (B, U))]
    ends = inside[numpy.isin(position, (L, U))] + 1
    return [(int(s), int(e), int(labels[inside == s][0])) for s, e in zip(starts, ends)]


def _log_matmul(x: numpy.ndarray, allowed: numpy.ndarray) -> numpy.ndarray:
    """log(exp(x) @ allowed) for log-scores `x` (..., n_tags) and a 0/1
    transition matrix: the sum over the allowed previous (or next) tags, as
    one matrix product instead of a log-sum-exp over every pair. (The
    callers ignore numpy's divide warning: log(0) is -inf, no tag allowed.)"""
    # The floor keeps a row of -inf from becoming NaN (-inf - -inf).
    top = numpy.maximum(x.max(axis=-1, keepdims=True), -1e30)
    return numpy.log(numpy.exp(x - top) @ allowed) + top


def _forward_backward(log_probs: numpy.ndarray, trans, start, end) -> Tuple[numpy.ndarray, numpy.ndarray, float]:
    """Forward and backward log-scores of the valid tag sequences (under
    `biluo_constraints`), each scored by the sum of its tags'
    log-probabilities, and their log-normaliser."""
    allowed = numpy.isfinite(trans).astype(log_probs.dtype)
    alpha = numpy.empty_like(log_probs)
    beta = numpy.empty_like(log_probs)
    alpha[0] = start + log_probs[0]
    beta[-1] = end
    with numpy.errstate(divide="ignore"):
        for t in range(1, len(log_probs)):
            alpha[t] = _log_matmul(alpha[t - 1], allowed) + log_probs[t]
        for t in range(len(log_probs) - 2, -1, -1):
            beta[t] = _log_matmul(log_probs[t + 1] + beta[t + 1], allowed.T)
    return alpha, beta, float(numpy.logaddexp.reduce(alpha[-1] + end))


def entity_probabilities(log_probs: numpy.ndarray, tags: numpy.ndarray, n_labels: int) -> numpy.ndarray:
    """The probability of each entity of `tags` (exactly its tokens and its
    label), under the model's distribution over *valid* tag sequences: each
    sequence scored by the product of its tags' probabilities, normalised over
    the valid ones (forward-backward). One value per `entity_spans(tags)`."""
    spans = entity_spans(tags)
    if not spans:
        return numpy.zeros((0,), dtype="float32")
    return SpanProbabilities(log_probs, spans, n_labels).probabilities.astype("float32")


class SpanProbabilities:
    """For spans (start, end, label index) of one doc: the probability of
    each being exactly one entity of its label (as `entity_probabilities`),
    and the gradient of a weighted sum of their logs (`gradient`).

    The cost is linear in the doc's length whatever the number of spans: one
    forward-backward over the doc gives every probability; the gradient of
    log p(span) is the tag posteriors with the span fixed minus those
    without, and with the span fixed the doc splits into the tokens before it
    (a doc that must end where the span starts) and after it (one that must
    start after it), whose posteriors one backward pass over all the spans'
    prefixes and one forward pass over their suffixes give, batched over the
    spans."""

    def __init__(self, log_probs: numpy.ndarray, spans: Sequence[Tuple[int, int, int]], n_labels: int):
        self.log_probs = log_probs
        self.trans, start, end = biluo_constraints(n_labels)
        self.alpha, self.beta, self.log_z = _forward_backward(log_probs, self.trans, start, end)
        self.spans = [(s, e, span_tag_columns(s, e, label)) for s, e, label in spans]
        # The log-scores into each span (from the tokens before it), along it,
        # and out of it (to the tokens after it).
        self.into = numpy.asarray([
            start[cols[0]] if s == 0 else numpy.logaddexp.reduce(self.alpha[s - 1] + self.trans[:, cols[0]])
            for s, e, cols in self.spans
        ])
        along = numpy.asarray([log_probs[numpy.arange(s, e), cols].sum() for s, e, cols in self.spans])
        self.out = numpy.asarray([self.beta[e - 1, cols[-1]] for s, e, cols in self.spans])
        log_z_span = self.into + along + self.out
        self.possible = numpy.isfinite(log_z_span)
        with numpy.errstate(invalid="ignore"):
            log_p = numpy.where(self.possible, numpy.minimum(log_z_span - self.log_z, 0.0), -numpy.inf)
        self.probabilities = numpy.exp(log_p)

    def gradient(self, weights: numpy.ndarray) -> numpy.ndarray:
        """sum_i weights[i] * d log p(span i) / d log_probs, (n_tokens, n_tags);
        impossible spans (probability 0) contribute nothing."""
        log_probs, alpha, beta = self.log_probs, self.alpha, self.beta
        allowed = numpy.isfinite(self.trans).astype(log_probs.dtype)
        weights = numpy.where(self.possible, numpy.asarray(weights, dtype=log_probs.dtype), 0.0)
        grad = -weights.sum() * numpy.exp(alpha + beta - self.log_z)
        chosen = numpy.flatnonzero(weights)
        if not len(chosen):
            return grad
        spans = [self.spans[i] for i in chosen]
        w = weights[chosen]
        for (s, e, cols), weight in zip(spans, w):
            grad[numpy.arange(s, e), cols] += weight
        # Before each span, a backward pass from its start: the tag before it
        # must be one that its first tag may follow.
        starts = numpy.asarray([s for s, _, _ in spans])
        into_span = numpy.stack([self.trans[:, cols[0]] for _, _, cols in spans])
        into = self.into[chosen][:, None]
        state = numpy.full((len(spans), log_probs.shape[1]), -numpy.inf)
        with numpy.errstate(divide="ignore"):
            for t in range(int(starts.max()) - 1, -1, -1):
                stepped = _log_matmul(log_probs[t + 1] + state, allowed.T)
                state = numpy.where((t == starts - 1)[:, None], into_span, stepped)
                grad[t] += (w * (t < starts)) @ numpy.exp(alpha[t] + state - into)
        # After each span, a forward pass from its end: the tag after it must
        # be one that may follow its last tag.
        ends = numpy.asarray([e for _, e, _ in spans])
        out_span = numpy.stack([self.trans[cols[-1]] for _, _, cols in spans])
        out = self.out[chosen][:, None]
        state = numpy.full((len(spans), log_probs.shape[1]), -numpy.inf)
        with numpy.errstate(divide="ignore"):
            for t in range(int(ends.min()), len(log_probs)):
                state = numpy.where((t == ends)[:, None], out_span, _log_matmul(state, allowed)) + log_probs[t]
                grad[t] += (w * (t >= ends)) @ numpy.exp(state + beta[t] - out)
        return grad


def span_tag_columns(start: int, end: int, label_index: int) -> numpy.ndarray:
    """The tag column of each token of an entity (B I.. L, or U)."""
    if end - start == 1:
        return numpy.asarray([tag_column(label_index, U)])
    positions = [B] + [I] * (end - start - 2) + [L]
    return tag_column(label_index, numpy.asarray(positions))
