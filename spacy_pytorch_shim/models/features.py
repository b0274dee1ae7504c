"""Thinc layers that turn docs into hashed row ids for torch embedding tables."""
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
    keys = [doc.to_array(model.attrs["attr_id"]).astype("uint64") for doc in docs]
    return _ngram_ids(model, keys), lambda d: []


def _ngram_ids(model: Model, keys_per_doc: List[numpy.ndarray]) -> Ragged:
    ops = _CPU_OPS
    size, rows = model.attrs["ngram_size"], model.attrs["rows"]
    n_hashed = numpy.uint64(rows - 1)
    bags: List[Ints1d] = []
    for keys in keys_per_doc:
        grams = [keys] + [ops.ngrams(n, keys) for n in range(2, min(size, len(keys)) + 1)]
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
    keys = [doc.to_array(model.attrs["attr_id"]).astype("uint64") for doc in docs]
    return _subword_rows(model, keys, docs[0].vocab.strings if docs else StringStore()), lambda d: []


def _subword_rows(
    model: Model, keys_per_doc: List[numpy.ndarray], strings: StringStore
) -> Tuple[Ragged, Ints1d, Ints1d]:
    settings = (model.attrs["min_n"], model.attrs["max_n"], model.attrs["rows"])
    keys = numpy.concatenate(keys_per_doc) if keys_per_doc else numpy.zeros((0,), dtype="uint64")
    unique, inverse = numpy.unique(keys, return_inverse=True)
    cache = _SUBWORD_IDS.setdefault(settings, {})
    texts = [cache.get(key) for key in unique.tolist()]
    for i, ids in enumerate(texts):
        if ids is None:
            texts[i] = _subword_ids(int(unique[i]), settings, strings)
    subwords = numpy.concatenate(texts) if texts else numpy.zeros((0,), dtype="int64")
    ops = model.ops
    text_lengths = numpy.asarray([len(text) for text in texts], dtype="int32")
    doc_lengths = numpy.asarray([len(keys) for keys in keys_per_doc], dtype="int32")
    return (
        Ragged(ops.asarray(subwords), ops.asarray(text_lengths)),
        ops.asarray(inverse.astype("int64")),
        ops.asarray(doc_lengths),
    )


def hashed_ngrams_and_subwords(
    attr: str, ngram_size: int, rows: int, min_n: int, max_n: int
) -> Model[List[Doc], Tuple[Ragged, Tuple[Ragged, Ints1d, Ints1d]]]:
    """Docs -> (hashed_ngrams, token_subwords) into one table of `rows`: the
    input of a bag of n-grams and subwords. (Thinc's `tuplify` would declare
    an input width, which `add` then tries to read off the docs.) The docs'
    `attr` arrays are read once for both."""
    return Model(
        "hashed_ngrams_and_subwords",
        _pair_forward,
        layers=[hashed_ngrams(attr, ngram_size, rows), token_subwords(attr, min_n, max_n, rows)],
    )


def _pair_forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[Tuple, Callable]:
    ngrams, subwords = model.layers
    keys = [doc.to_array(ngrams.attrs["attr_id"]).astype("uint64") for doc in docs]
    strings = docs[0].vocab.strings if docs else StringStore()
    return (_ngram_ids(ngrams, keys), _subword_rows(subwords, keys, strings)), lambda d: []


# (min_n, max_n, rows) -> {LOWER key: the text's subword rows}; a key is the
# hash of the text, the same in every vocab. Each dict is cleared when full.
_SUBWORD_IDS: Dict[Tuple[int, int, int], Dict[int, numpy.ndarray]] = {}
_SUBWORD_CACHE_SIZE = 200_000


def _subword_ids(key: int, settings: Tuple[int, int, int], strings: StringStore) -> numpy.ndarray:
    min_n, max_n, rows = settings
    wrapped = f"<{strings[key]}>"
    hashes = [hash_string(wrapped[i : i + n]) for n in range(min_n, max_n + 1) for i in range(len(wrapped) - n + 1)]
    ids = (1 + numpy.asarray(hashes, dtype="uint64") % numpy.uint64(rows - 1)).astype("int64")
    cache = _SUBWORD_IDS[settings]
    if len(cache) >= _SUBWORD_CACHE_SIZE:
        cache.clear()
    cache[key] = ids
    return ids
