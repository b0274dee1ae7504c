"""`spacy-pytorch-shim.TorchTextCat.v3`: the n-gram bag also holds each
token's character n-grams (fastText's subwords), averaged per token, so an
unseen word that looks like a trained one is not blank. `.v4`: the same bag,
each doc's sum (its bias row apart) divided by the square root of its token
count, so that logits grow as sqrt(length), not as length."""
import numpy
import pytest
import spacy
from spacy.strings import hash_string
from thinc.api import Adam, fix_random_seed

from spacy_pytorch_shim.models.features import hashed_ngrams, token_subwords
from spacy_pytorch_shim.models.textcat import build_textcat_v2, build_textcat_v3, build_textcat_v4
from spacy_pytorch_shim.models.tok2vec import build_torch_tok2vec

TEXTS = ["I looove it", "", "Love", "LOVE is terrible, love"]
ROWS = 1000


@pytest.fixture
def docs():
    nlp = spacy.blank("en")
    return [nlp.make_doc(text) for text in TEXTS]


def bag(model):
    wrapper = next(node for node in model.walk() if node.shims)
    return wrapper.shims[0].module


def expected_subwords(text, min_n, max_n):
    wrapped = f"<{text.lower()}>"
    grams = [wrapped[i : i + n] for n in range(min_n, max_n + 1) for i in range(len(wrapped) - n + 1)]
    return [1 + hash_string(gram) % (ROWS - 1) for gram in grams]


def test_subwords_once_per_distinct_lowercased_text(docs):
    (subwords, inverse, doc_lengths), _ = token_subwords("LOWER", 3, 5, ROWS).begin_update(docs)
    tokens = [token.text for doc in docs for token in doc]
    assert list(doc_lengths) == [len(doc) for doc in docs]
    assert len(inverse) == len(tokens)
    assert len(subwords.lengths) == len({token.lower() for token in tokens})
    rows = numpy.split(subwords.dataXd, numpy.cumsum(subwords.lengths)[:-1])
    for token, row in zip(tokens, inverse):
        assert list(rows[row]) == expected_subwords(token, 3, 5)
    assert subwords.dataXd.min() >= 1  # row 0 is the bag's bias


def test_logits_are_word_rows_plus_each_tokens_mean_subword_row(docs):
    model = build_textcat_v3(tok2vec=None, exclusive_classes=True, ngram_rows=ROWS, nO=3)
    model.initialize(X=docs)
    weight = bag(model).output.weight
    weight.data.normal_()
    table = weight.detach().numpy()
    words, _ = hashed_ngrams("LOWER", 1, ROWS).begin_update(docs)
    word_rows = numpy.split(words.dataXd, numpy.cumsum(words.lengths)[:-1])
    for doc, ids, logits in zip(docs, word_rows, model.predict(docs)):
        expected = table[ids].sum(axis=0)
        for token in doc:
            expected += table[expected_subwords(token.text, 3, 5)].mean(axis=0)
        numpy.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_an_unseen_word_shares_what_its_look_alikes_learned(docs):
    """Trained on "good"/"bad" words, the bag scores unseen "goood" and
    "baaad" apart; v2's bag, which has no subwords, scores both as its bias."""
    nlp = spacy.blank("en")
    train = [nlp.make_doc(t) for t in ["good", "so good", "bad", "too bad"]]
    truth = numpy.asarray([[1, 0], [1, 0], [0, 1], [0, 1]], dtype="f")
    unseen = [nlp.make_doc("goood"), nlp.make_doc("baaad")]
    predictions = {}
    for build in (build_textcat_v2, build_textcat_v3):
        fix_random_seed(0)
        model = build(tok2vec=None, exclusive_classes=True, ngram_size=1, ngram_rows=ROWS, nO=2)
        model.initialize(X=train)
        optimizer = Adam(0.05)
        for _ in range(20):
            Y, backprop = model.begin_update(train)
            backprop(Y - truth)
            model.finish_update(optimizer)
        predictions[build] = model.predict(unseen)
    v2, v3 = predictions[build_textcat_v2], predictions[build_textcat_v3]
    numpy.testing.assert_allclose(v2[0], v2[1])
    assert v3[0, 0] - v3[0, 1] > 0.05 and v3[1, 1] - v3[1, 0] > 0.05


BUILDS = {"v3": build_textcat_v3, "v4": build_textcat_v4}


@pytest.mark.parametrize("version", list(BUILDS))
@pytest.mark.parametrize("with_tok2vec", [False, True])
def test_resize_keeps_outputs_and_new_label_starts_at_zero(docs, with_tok2vec, version):
    """With a tok2vec the bag is added to a pooled head (Thinc's `add`, whose
    initialization reads the input width of every branch)."""
    tok2vec = build_torch_tok2vec(width=16, rows=[50, 50, 50, 50]) if with_tok2vec else None
    model = BUILDS[version](tok2vec=tok2vec, exclusive_classes=True, hidden_width=8, ngram_rows=ROWS, nO=2)
    model.initialize(X=docs)
    bag(model).output.weight.data.normal_()
    old = model.predict(docs)
    model.attrs["resize_output"](model, 3)
    new = model.predict(docs)
    numpy.testing.assert_allclose(new[:, :2], old, atol=1e-6)
    numpy.testing.assert_allclose(new[:, 2], 0.0, atol=1e-6)


@pytest.mark.parametrize("version", list(BUILDS))
def test_save_and_load_keep_predictions(docs, version):
    model = BUILDS[version](tok2vec=None, exclusive_classes=False, ngram_rows=ROWS, nO=2)
    model.initialize(X=docs)
    bag(model).output.weight.data.normal_()
    loaded = BUILDS[version](tok2vec=None, exclusive_classes=False, ngram_rows=ROWS, nO=2)
    loaded.initialize(X=docs)
    loaded.from_bytes(model.to_bytes())
    numpy.testing.assert_allclose(loaded.predict(docs), model.predict(docs))


def test_no_docs_and_empty_docs(docs):
    model = build_textcat_v3(tok2vec=None, exclusive_classes=True, ngram_rows=ROWS, nO=2)
    model.initialize(X=docs)
    assert model.predict([]).shape == (0, 2)
    empty = spacy.blank("en").make_doc("")
    assert model.predict([empty, empty]).shape == (2, 2)


@pytest.mark.parametrize(
    "kwargs,key",
    [({"subword_min": 0}, "subword_min"), ({"subword_min": 4, "subword_max": 3}, "subword_max"), ({"ngram_size": 0}, "ngram_size")],
)
@pytest.mark.parametrize("version", list(BUILDS))
def test_errors_name_the_argument(kwargs, key, version):
    with pytest.raises(ValueError, match=f"TorchTextCat.{version}: `{key}`"):
        BUILDS[version](tok2vec=None, exclusive_classes=True, **kwargs)


def test_the_subword_table_grows_and_empties_without_changing_any_row(monkeypatch):
    """Enough distinct words to outgrow the table's first arrays, and a limit
    low enough that it is emptied twice along the way: every batch still
    gets each text's own rows, in the order of its distinct texts."""
    from spacy_pytorch_shim.models import features

    monkeypatch.setattr(features._SubwordTable, "MAX_TEXTS", 5000)
    monkeypatch.setattr(features, "_SUBWORD_TABLES", {})
    nlp = spacy.blank("en")
    rng = numpy.random.default_rng(0)
    letters = numpy.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = sorted({"".join(rng.choice(letters, size=rng.integers(4, 12))) for _ in range(12000)})
    layer = token_subwords("LOWER", 3, 5, ROWS)
    cleared, largest = 0, 0
    for start in range(0, len(words), 1000):
        # Each batch repeats some words of the previous one.
        batch = words[max(0, start - 200) : start + 1000]
        doc = nlp.make_doc(" ".join(batch))
        before = len(features._SUBWORD_TABLES.get((3, 5, ROWS), features._SubwordTable((3, 5, ROWS))))
        (subwords, inverse, _), _ = layer.begin_update([doc])
        table = features._SUBWORD_TABLES[(3, 5, ROWS)]
        cleared += len(table) < before
        largest = max(largest, len(table.flat))
        rows = numpy.split(subwords.dataXd, numpy.cumsum(subwords.lengths)[:-1])
        for token, row in zip(doc, inverse):
            assert list(rows[row]) == expected_subwords(token.text, 3, 5), token.text
    assert cleared >= 2, "the table was never emptied: the test misses that path"
    assert largest > 1 << 16, "the flat array never grew: the test misses that path"


@pytest.mark.parametrize("ngram_size", [1, 2])
def test_each_bag_is_row_0_then_its_words_then_its_ngrams(docs, ngram_size):
    """hashed_ngrams against its definition, empty docs included (the
    words-only bag is computed for the whole batch at once, longer n-grams
    doc by doc)."""
    from spacy.attrs import LOWER
    from thinc.api import NumpyOps

    ngrams, _ = hashed_ngrams("LOWER", ngram_size, ROWS).begin_update(docs + docs[:1])
    bags = numpy.split(ngrams.dataXd, numpy.cumsum(ngrams.lengths)[:-1])
    assert len(bags) == len(docs) + 1
    for doc, bag in zip(docs + docs[:1], bags):
        keys = doc.to_array(LOWER)
        expected = [0] + [1 + int(key) % (ROWS - 1) for key in keys]
        if ngram_size == 2 and len(doc) >= 2:
            expected += [1 + int(g) % (ROWS - 1) for g in NumpyOps().ngrams(2, keys)]
        assert bag.tolist() == expected, doc.text


# ---------------------------------------------------------------- TorchTextCat.v4


def random_model(build, docs, nO=3, **kwargs):
    model = build(tok2vec=None, exclusive_classes=True, ngram_rows=ROWS, nO=nO, **kwargs)
    model.initialize(X=docs)
    fix_random_seed(0)
    bag(model).output.weight.data.normal_()
    return model


@pytest.mark.parametrize("ngram_size", [1, 2])
def test_logits_are_the_bias_plus_the_bag_over_the_root_of_the_length(docs, ngram_size):
    model = random_model(build_textcat_v4, docs, ngram_size=ngram_size)
    table = bag(model).output.weight.detach().numpy()
    ngrams, _ = hashed_ngrams("LOWER", ngram_size, ROWS).begin_update(docs)
    rows = numpy.split(ngrams.dataXd, numpy.cumsum(ngrams.lengths)[:-1])
    for doc, ids, logits in zip(docs, rows, model.predict(docs)):
        assert ids[0] == 0
        total = table[ids[1:]].sum(axis=0)
        for token in doc:
            total += table[expected_subwords(token.text, 3, 5)].mean(axis=0)
        expected = table[0] + total / numpy.sqrt(max(len(doc), 1))
        numpy.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_logits_grow_as_the_root_of_a_repeated_doc(docs):
    nlp = spacy.blank("en")
    model = random_model(build_textcat_v4, docs)
    once, four_times = model.predict([nlp.make_doc("great"), nlp.make_doc("great great great great")])
    bias = bag(model).output.weight.detach().numpy()[0]
    numpy.testing.assert_allclose(four_times - bias, 2 * (once - bias), rtol=1e-5, atol=1e-6)
    # v3 with the same table: four times, as a plain sum.
    v3 = random_model(build_textcat_v3, docs)
    once, four_times = v3.predict([nlp.make_doc("great"), nlp.make_doc("great great great great")])
    numpy.testing.assert_allclose(four_times - bias, 4 * (once - bias), rtol=1e-5, atol=1e-6)


def test_a_one_token_doc_scores_as_in_v3(docs):
    v3, v4 = random_model(build_textcat_v3, docs), random_model(build_textcat_v4, docs)
    one_token = [docs[2]]
    numpy.testing.assert_allclose(v4.predict(one_token), v3.predict(one_token), rtol=1e-6)
    assert not numpy.allclose(v4.predict([docs[0]]), v3.predict([docs[0]]))


def test_v4_trains_with_sparse_gradients():
    nlp = spacy.blank("en")
    train = [nlp.make_doc(t) for t in ["good film", "so good and fun", "bad film", "too bad and dull"]]
    truth = numpy.asarray([[1, 0], [1, 0], [0, 1], [0, 1]], dtype="f")
    fix_random_seed(0)
    model = build_textcat_v4(tok2vec=None, exclusive_classes=True, ngram_rows=ROWS, nO=2)
    model.initialize(X=train)
    weight = bag(model).output.weight
    optimizer = Adam(0.05)
    for _ in range(20):
        Y, backprop = model.begin_update(train)
        backprop(Y - truth)
        assert weight.grad.is_sparse
        model.finish_update(optimizer)
    scores = model.predict([nlp.make_doc("good"), nlp.make_doc("bad")])
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]


def test_v4_scores_no_docs_and_empty_docs_with_the_bias(docs):
    model = random_model(build_textcat_v4, docs, nO=2)
    assert model.predict([]).shape == (0, 2)
    empty = spacy.blank("en").make_doc("")
    numpy.testing.assert_allclose(
        model.predict([empty, empty]), numpy.tile(bag(model).output.weight.detach().numpy()[0], (2, 1))
    )


def test_the_pair_gives_longer_ngrams_per_doc_and_a_word_row_per_distinct_text(docs):
    """hashed_ngrams_and_subwords: row 0 and the 2..ngram_size-grams per doc;
    per distinct lowercased text its subword rows and its word row, each
    token pointing at its text."""
    from spacy.attrs import LOWER
    from thinc.api import NumpyOps

    from spacy_pytorch_shim.models.features import hashed_ngrams_and_subwords

    for ngram_size in (1, 2, 3):
        layer = hashed_ngrams_and_subwords("LOWER", ngram_size, ROWS, 3, 5)
        ngrams, (subwords, words, inverse, doc_lengths) = layer.predict(docs)
        bags = numpy.split(ngrams.dataXd, numpy.cumsum(ngrams.lengths)[:-1])
        texts = numpy.split(subwords.dataXd, numpy.cumsum(subwords.lengths)[:-1])
        tokens = [token for doc in docs for token in doc]
        assert list(doc_lengths) == [len(doc) for doc in docs]
        assert len(words) == len(texts) == len({token.lower_ for token in tokens})
        for token, text in zip(tokens, inverse):
            assert words[text] == 1 + hash_string(token.lower_) % (ROWS - 1)
            assert list(texts[text]) == expected_subwords(token.text, 3, 5)
        for doc, bag in zip(docs, bags):
            keys = doc.to_array(LOWER)
            expected = [0]
            for n in range(2, min(ngram_size, len(doc)) + 1):
                expected += [1 + int(g) % (ROWS - 1) for g in NumpyOps().ngrams(n, keys)]
            assert bag.tolist() == expected, (ngram_size, doc.text)


def test_texts_whose_keys_share_their_low_bits_each_get_their_own_rows(monkeypatch):
    """The subword table's index places a key by its low bits: words picked
    so that their keys all land on one place of it still each find their
    own rows, in any order and mixed with other words."""
    from spacy_pytorch_shim.models import features

    monkeypatch.setattr(features, "_SUBWORD_TABLES", {})
    rng = numpy.random.default_rng(0)
    letters = numpy.array(list("abcdefghijklmnopqrstuvwxyz"))
    places = {}
    for _ in range(100_000):
        word = "".join(rng.choice(letters, size=6))
        places.setdefault(hash_string(word) & ((1 << 13) - 1), set()).add(word)
    crowded = sorted(max(places.values(), key=len))
    assert len(crowded) >= 10
    others = sorted(next(words for words in places.values() if not words & set(crowded)))
    nlp = spacy.blank("en")
    layer = token_subwords("LOWER", 3, 5, ROWS)
    for batch in (crowded[::2] + others, crowded[::-1], crowded + others + crowded):
        doc = nlp.make_doc(" ".join(batch))
        (subwords, inverse, _), _ = layer.begin_update([doc])
        rows = numpy.split(subwords.dataXd, numpy.cumsum(subwords.lengths)[:-1])
        for token, row in zip(doc, inverse):
            assert list(rows[row]) == expected_subwords(token.text, 3, 5), token.text
    assert len(features._SUBWORD_TABLES[(3, 5, ROWS)]) == len(set(crowded + others))
