"""Thinc layers that turn docs into hashed row ids for torch embedding tables."""
import threading
from functools import lru_cache
from typing import Callable, Dict, List, Sequence, Tuple

import numpy
from spacy.attrs import intify_attr
from spacy.strings import StringStore, hash_string
from spacy.tokens import Doc
from thinc.api import Model, NumpyOps
from thinc.types import Ints1d, Ragged

N_HASHES = 4


def hashed_token_features(attrs: Sequence[str], rows: Sequence[int]) -> Model[List[Doc], Ragged]:
    """Docs -> Ragged int64 ids of shape (n_tokens, n_attrs, 4): each token
    attribute hashed with four seeds into its own block of one shared table,
    in the spirit of spaCy's MultiHashEmbed (four rows per key, summed)."""
    if len(attrs) != len(rows):
        raise ValueError(
            f"attrs ({len(attrs)}: {list(attrs)}) and rows ({len(rows)}: {list(rows)}) "
            f"must have the same length"
        )
    attr_ids = [intify_attr(attr) for attr in attrs]
    if None in attr_ids:
        raise ValueError(f"Unknown token attribute in {list(attrs)}")
    offsets = numpy.cumsum([0] + list(rows[:-1])).astype("int64")
    return Model(
        "hashed_token_features",
        _token_features_forward,
        attrs={
            "attr_ids": attr_ids,
            "rows": numpy.asarray(rows, dtype="int64"),
            "offsets": offsets,
        },
    )


# Hashing runs on the CPU (the keys come from docs as numpy arrays); the ids
# are moved to the model's device (numpy or cupy) at the end.
_CPU_OPS = NumpyOps()
BIAS_ROW = numpy.zeros((1,), dtype="uint64")


def _token_features_forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[Ragged, Callable]:
    ops = _CPU_OPS
    attr_ids = model.attrs["attr_ids"]
    rows, offsets = model.attrs["rows"], model.attrs["offsets"]
    lengths = numpy.asarray([len(doc) for doc in docs], dtype="int32")
    if lengths.sum() == 0:
        ids = numpy.zeros((0, len(attr_ids), N_HASHES), dtype="int64")
    else:
        keys = numpy.concatenate([doc.to_array(attr_ids) for doc in docs if len(doc)])
        keys = keys.reshape(len(keys), len(attr_ids))
        ids = numpy.empty((len(keys), len(attr_ids), N_HASHES), dtype="int64")
        for i in range(len(attr_ids)):
            hashed = ops.hash(numpy.ascontiguousarray(keys[:, i]), i)
            ids[:, i] = hashed.astype("int64") % rows[i] + offsets[i]
    return Ragged(model.ops.asarray(ids), model.ops.asarray(lengths)), lambda d: []


def hashed_ngrams(attr: str, ngram_size: int, rows: int) -> Model[List[Doc], Ragged]:
    """Docs -> Ragged int64 ids of every 1..ngram_size-gram of `attr`, hashed
    into rows 1..rows-1, plus row 0 in every doc: the input of a
    bag-of-ngrams layer, whose row 0 is then a per-label bias (rare labels
    need one, and it resizes along with the other rows)."""
    attr_id = intify_attr(attr)
    if attr_id is None:
        raise ValueError(f"Unknown token attribute '{attr}'")
    return Model(
        "hashed_ngrams",
        _ngrams_forward,
        attrs={"attr_id": attr_id, "ngram_size": ngram_size, "rows": rows},
    )


def _ngrams_forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[Ragged, Callable]:
    keys = [doc.to_array(model.attrs["attr_id"]).astype("uint64", copy=False) for doc in docs]
    return _ngram_ids(model, keys), lambda d: []


def _ngram_ids(model: Model, keys_per_doc: List[numpy.ndarray], min_n: int = 1) -> Ragged:
    """Each doc's row 0, then the rows of its min_n..ngram_size-grams."""
    ops = _CPU_OPS
    size, rows = model.attrs["ngram_size"], model.attrs["rows"]
    n_hashed = numpy.uint64(rows - 1)
    if size < min_n:
        # Row 0 alone (the words-only bag of n-grams and subwords).
        return Ragged(
            model.ops.asarray(numpy.zeros((len(keys_per_doc),), dtype="int64")),
            model.ops.asarray(numpy.ones((len(keys_per_doc),), dtype="int32")),
        )
    if size == 1 and keys_per_doc:
        # Words only (v1/v2's efficiency bag): the whole batch in one step,
        # row 0 inserted where each doc starts.
        doc_lengths = numpy.asarray([len(keys) for keys in keys_per_doc], dtype="int64")
        rows_of_words = (1 + numpy.concatenate(keys_per_doc) % n_hashed).astype("int64")
        ids = numpy.insert(rows_of_words, numpy.cumsum(doc_lengths) - doc_lengths, 0)
        return Ragged(model.ops.asarray(ids), model.ops.asarray((doc_lengths + 1).astype("int32")))
    bags: List[Ints1d] = []
    for keys in keys_per_doc:
        grams = [ops.ngrams(n, keys) if n > 1 else keys for n in range(min_n, min(size, len(keys)) + 1)]
        bags.append(numpy.concatenate([BIAS_ROW] + [1 + g % n_hashed for g in grams]))
    lengths = numpy.asarray([len(bag) for bag in bags], dtype="int32")
    ids = numpy.concatenate(bags).astype("int64") if bags else numpy.zeros((0,), dtype="int64")
    return Ragged(model.ops.asarray(ids), model.ops.asarray(lengths))


# Code points are taken modulo this many rows of the character table.
CHAR_ROWS = 512


def token_characters(max_chars: int) -> Model[List[Doc], Tuple[Ragged, Ints1d]]:
    """Docs -> (chars, inverse): the character ids of each distinct token text
    of the batch (Ragged, one row per text; a text longer than max_chars
    keeping its first and last max_chars // 2 characters), and, per token,
    the index of its text. A character CNN then runs once per distinct text,
    not per token."""
    return Model("token_characters", _characters_forward, attrs={"max_chars": max_chars})


def _characters_forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[Tuple[Ragged, Ints1d], Callable]:
    max_chars = model.attrs["max_chars"]
    orths = [doc.to_array("ORTH") for doc in docs if len(doc)]
    keys = numpy.concatenate(orths) if orths else numpy.zeros((0,), dtype="uint64")
    unique, inverse = numpy.unique(keys, return_inverse=True)
    rows = [_char_ids(docs[0].vocab.strings[int(key)], max_chars) for key in unique]
    chars = numpy.fromiter((c for row in rows for c in row), dtype="int64")
    lengths = numpy.asarray([len(row) for row in rows], dtype="int32")
    ops = model.ops
    return (Ragged(ops.asarray(chars), ops.asarray(lengths)), ops.asarray(inverse.astype("int64"))), lambda d: []


@lru_cache(maxsize=200_000)
def _char_ids(text: str, max_chars: int) -> Tuple[int, ...]:
    if len(text) > max_chars:
        half = max_chars // 2
        text = text[:half] + text[len(text) - (max_chars - half) :]
    return tuple(ord(c) % CHAR_ROWS for c in text)


def token_subwords(attr: str, min_n: int, max_n: int, rows: int) -> Model[List[Doc], Tuple[Ragged, Ints1d, Ints1d]]:
    """Docs -> (subwords, inverse, lengths): the hashed character n-grams,
    min_n..max_n long, of each distinct `attr` text of the batch (LOWER:
    the lowercased token) wrapped in < and > (fastText's subwords,
    Bojanowski et al. 2017), as rows 1..rows-1 of a bag's table (Ragged, one
    row per text); per token, the index of its text; per doc, its number of
    tokens."""
    attr_id = intify_attr(attr)
    if attr_id is None:
        raise ValueError(f"Unknown token attribute '{attr}'")
    return Model(
        "token_subwords", _subwords_forward, attrs={"attr_id": attr_id, "min_n": min_n, "max_n": max_n, "rows": rows}
    )


def _subwords_forward(
    model: Model, docs: List[Doc], is_train: bool
) -> Tuple[Tuple[Ragged, Ints1d, Ints1d], Callable]:
    keys = [doc.to_array(model.attrs["attr_id"]).astype("uint64", copy=False) for doc in docs]
    subwords, _, inverse, doc_lengths = _subword_rows(model, keys, docs[0].vocab.strings if docs else StringStore())
    return (subwords, inverse, doc_lengths), lambda d: []


def _subword_rows(
    model: Model, keys_per_doc: List[numpy.ndarray], strings: StringStore
) -> Tuple[Ragged, numpy.ndarray, Ints1d, Ints1d]:
    """The subword rows of each distinct text (Ragged), the text keys (on
    the CPU), each token's index among the texts and each doc's length."""
    settings = (model.attrs["min_n"], model.attrs["max_n"], model.attrs["rows"])
    keys = numpy.concatenate(keys_per_doc) if keys_per_doc else numpy.zeros((0,), dtype="uint64")
    table = _SUBWORD_TABLES.get(settings)
    if table is None:
        table = _SUBWORD_TABLES.setdefault(settings, _SubwordTable(settings))
    subwords, text_lengths, text_keys, inverse = table.lookup(keys, strings)
    doc_lengths = numpy.asarray([len(keys) for keys in keys_per_doc], dtype="int32")
    ops = model.ops
    return (
        Ragged(ops.asarray(subwords), ops.asarray(text_lengths)),
        text_keys,
        ops.asarray(inverse),
        ops.asarray(doc_lengths),
    )


def hashed_ngrams_and_subwords(
    attr: str, ngram_size: int, rows: int, min_n: int, max_n: int
) -> Model[List[Doc], Tuple[Ragged, Tuple[Ragged, Ints1d, Ints1d, Ints1d]]]:
    """Docs -> (ngrams, (subwords, words, inverse, doc_lengths)) in one table
    of `rows`, the input of a bag of n-grams and subwords: each doc's row 0
    and the rows of its 2..ngram_size-grams; per distinct `attr` text of the
    batch, its subword rows (token_subwords) and its word row; per token,
    the index of its text; per doc, its number of tokens. A text's word row
    comes once per distinct text, not once per token, so the bag looks up
    each text once. (Thinc's `tuplify` would declare an input width, which
    `add` then tries to read off the docs.) The docs' `attr` arrays are read
    once for both."""
    return Model(
        "hashed_ngrams_and_subwords",
        _pair_forward,
        layers=[hashed_ngrams(attr, ngram_size, rows), token_subwords(attr, min_n, max_n, rows)],
    )


def _pair_forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[Tuple, Callable]:
    ngrams, subwords = model.layers
    keys = [doc.to_array(ngrams.attrs["attr_id"]).astype("uint64", copy=False) for doc in docs]
    strings = docs[0].vocab.strings if docs else StringStore()
    rows_of_subwords, text_keys, inverse, doc_lengths = _subword_rows(subwords, keys, strings)
    words = (1 + text_keys % numpy.uint64(ngrams.attrs["rows"] - 1)).astype("int64")
    return (
        _ngram_ids(ngrams, keys, min_n=2),
        (rows_of_subwords, model.ops.asarray(words), inverse, doc_lengths),
    ), lambda d: []


class _SubwordTable:
    """The subword rows of every text seen, for one (min_n, max_n, rows): a
    slot per text key (the hash of the text, the same in every vocab), found
    through an open-addressing index of the keys, and the rows of all slots
    in one flat array, so that a batch's lookup and gather are vectorised
    over its tokens rather than a Python loop. Emptied when it holds
    MAX_TEXTS texts; a lock keeps threads sharing it consistent."""

    MAX_TEXTS = 200_000

    def __init__(self, settings: Tuple[int, int, int]):
        self.settings = settings
        self.lock = threading.Lock()
        self._clear()

    def __len__(self) -> int:
        return self.n_texts

    def _clear(self) -> None:
        self.n_texts = 0
        self.keys = numpy.zeros((1 << 12,), dtype="uint64")
        self.starts = numpy.zeros((1 << 12,), dtype="int64")
        self.lengths = numpy.zeros((1 << 12,), dtype="int32")
        self.flat = numpy.zeros((1 << 16,), dtype="int64")
        self.size = 0
        # The index: at most half full, -1 where free; a key's place is its
        # low bits (keys are hashes), or the next free one after them.
        self.index_keys = numpy.zeros((1 << 13,), dtype="int64")
        self.index_slots = numpy.full((1 << 13,), -1, dtype="int64")

    def lookup(
        self, keys: numpy.ndarray, strings: StringStore
    ) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray]:
        """For each token's key: the rows of each distinct text, concatenated,
        the number of rows of each, its key, and each token's index among
        the distinct texts."""
        with self.lock:
            slots = self._find(keys.view("int64"))
            missing = slots < 0
            if missing.any():
                new = numpy.unique(keys[missing])
                if self.n_texts + len(new) > self.MAX_TEXTS:
                    self._clear()
                    missing[:] = True
                    new = numpy.unique(keys)
                for key, signed in zip(new.tolist(), new.view("int64").tolist()):
                    self._add(key, signed, strings)
                slots[missing] = self._find(keys[missing].view("int64"))
            seen = numpy.zeros((self.n_texts,), dtype="bool")
            seen[slots] = True
            distinct = numpy.flatnonzero(seen)
            position = numpy.empty((self.n_texts,), dtype="int64")
            position[distinct] = numpy.arange(len(distinct))
            lengths = self.lengths[distinct]
            starts = self.starts[distinct]
            text_keys = self.keys[distinct]
            flat = self.flat
        # Row j of text i is flat[starts[i] + j]: one index per row.
        ends = numpy.cumsum(lengths, dtype="int64")
        index = numpy.arange(ends[-1] if len(ends) else 0, dtype="int64")
        index += numpy.repeat(starts - (ends - lengths), lengths)
        return flat[index], lengths, text_keys, position[slots]

    def _find(self, keys: numpy.ndarray) -> numpy.ndarray:
        """The slot of each key (int64 view), -1 where it has none."""
        mask = len(self.index_slots) - 1
        at = keys & mask
        slots = self.index_slots[at]
        pending = numpy.flatnonzero((slots >= 0) & (self.index_keys[at] != keys))
        while len(pending):
            # Taken by another key: look at the next place.
            here = at[pending] = (at[pending] + 1) & mask
            slots[pending] = self.index_slots[here]
            pending = pending[(slots[pending] >= 0) & (self.index_keys[here] != keys[pending])]
        return slots

    def _add(self, key: int, signed: int, strings: StringStore) -> None:
        """A slot for a new key (`signed`: its int64 view)."""
        min_n, max_n, rows = self.settings
        wrapped = f"<{strings[key]}>"
        hashes = [hash_string(wrapped[i : i + n]) for n in range(min_n, max_n + 1) for i in range(len(wrapped) - n + 1)]
        ids = (1 + numpy.asarray(hashes, dtype="uint64") % numpy.uint64(rows - 1)).astype("int64")
        slot = self.n_texts
        if slot == len(self.starts):
            self.keys, self.starts, self.lengths = (
                numpy.concatenate([a, numpy.zeros_like(a)]) for a in (self.keys, self.starts, self.lengths)
            )
        while self.size + len(ids) > len(self.flat):
            # A new array, never resized in place: a batch still gathering
            # from the old one (outside the lock) keeps it.
            self.flat = numpy.concatenate([self.flat, numpy.zeros_like(self.flat)])
        self.flat[self.size : self.size + len(ids)] = ids
        self.keys[slot], self.starts[slot], self.lengths[slot] = key, self.size, len(ids)
        self.size += len(ids)
        self.n_texts += 1
        if 2 * self.n_texts > len(self.index_slots):
            capacity = 2 * len(self.index_slots)
            self.index_keys = numpy.zeros((capacity,), dtype="int64")
            self.index_slots = numpy.full((capacity,), -1, dtype="int64")
            for old, old_signed in enumerate(self.keys[: self.n_texts - 1].view("int64").tolist()):
                self._place(old_signed, old)
        self._place(signed, slot)

    def _place(self, signed: int, slot: int) -> None:
        mask = len(self.index_slots) - 1
        at = signed & mask
        while self.index_slots[at] >= 0:
            at = (at + 1) & mask
        self.index_keys[at], self.index_slots[at] = signed, slot


_SUBWORD_TABLES: Dict[Tuple[int, int, int], _SubwordTable] = {}
