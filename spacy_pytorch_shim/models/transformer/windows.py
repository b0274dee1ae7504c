"""Overlapping windows over long documents, and batches of windows bounded by
their padded number of pieces rather than by a number of documents."""
from typing import List, Sequence, Tuple

import numpy

# A window edge that is the document's own edge hides no context.
_NO_CUT = numpy.iinfo("i").max


def plan_windows(n_pieces: int, window: int, stride: int) -> List[Tuple[int, int]]:
    """(start, end) of each window over `n_pieces` pieces: one window if they
    fit, else windows every `stride` pieces, the last one ending at the end."""
    if n_pieces <= window:
        return [(0, n_pieces)] if n_pieces else []
    starts = list(range(0, n_pieces - window + 1, stride))
    if starts[-1] + window < n_pieces:
        starts.append(n_pieces - window)
    return [(start, start + window) for start in starts]


def best_windows(
    first: numpy.ndarray, last: numpy.ndarray, windows: Sequence[Tuple[int, int]], n_pieces: int
) -> numpy.ndarray:
    """For each span of pieces first..last (inclusive), the window that
    holds all of it with the most context on its closer cut side, or -1 if
    no window holds all of it."""
    best = numpy.full(len(first), -1, dtype="i")
    score = numpy.full(len(first), -1, dtype="i8")
    for w, (start, end) in enumerate(windows):
        inside = (first >= start) & (last < end)
        left = first - start if start > 0 else numpy.full(len(first), _NO_CUT)
        right = end - 1 - last if end < n_pieces else numpy.full(len(first), _NO_CUT)
        context = numpy.minimum(left, right)
        better = inside & (context > score)
        best[better] = w
        score[better] = context[better]
    return best


# A window joins a group only if it is at least this share of the group's
# longest: padding is at most 1/5 of a forward pass. Filling each pass up to
# `max_pieces` instead padded tweets to nearly twice their pieces, and the
# encoder's time is its padded pieces.
MIN_GROUP_FILL = 0.8


def group_windows(lengths: Sequence[int], max_pieces: int) -> List[List[int]]:
    """Windows (by index) in groups, longest first, each group's padded size
    (its longest window times its number of windows) at most `max_pieces`,
    except a single window longer than that, which is a group of its own,
    and each window at least MIN_GROUP_FILL of its group's longest."""
    groups: List[List[int]] = []
    longest = 0
    for i in numpy.argsort(-numpy.asarray(lengths, dtype="i8"), kind="stable").tolist():
        if groups and longest * (len(groups[-1]) + 1) <= max_pieces and lengths[i] >= MIN_GROUP_FILL * longest:
            groups[-1].append(i)
        else:
            groups.append([i])
            longest = lengths[i]
    return groups
