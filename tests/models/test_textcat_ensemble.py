"""TorchTextCat.v3: the bag of n-grams plus averaged n-gram vectors (and
pooled token vectors): shapes, gradients into the n-gram vectors, resizing,
and the checks of its settings."""
import numpy
import pytest
import spacy
from thinc.api import Adam, Config

from spacy_pytorch_shim.models.textcat_ensemble import build_textcat_v3
from spacy_pytorch_shim.models.tok2vec import build_torch_tok2vec

TEXTS = ["Alice lives in Paris", "", "one", "a much longer text with many different words in it"]


@pytest.fixture
def docs():
    nlp = spacy.blank("en")
    return [nlp.make_doc(text) for text in TEXTS]


def ngram_vectors(model):
    wrapper = next(node for node in model.walk() if node.name == "torch_textcat_ngram_vectors")
    return wrapper.shims[0].module.embed.weight.detach().clone()


@pytest.mark.parametrize("with_tok2vec", [False, True])
def test_v3_shapes_gradients_and_resize(docs, with_tok2vec):
    tok2vec = build_torch_tok2vec(width=16, rows=[50, 10, 10, 10]) if with_tok2vec else None
    model = build_textcat_v3(tok2vec=tok2vec, exclusive_classes=True, hidden_width=8,
                             ngram_rows=64, ngram_width=8, nO=3)
    model.initialize(X=docs)
    Y, backprop = model.begin_update(docs)
    assert Y.shape == (len(docs), 3)
    assert model.has_ref("tok2vec") is with_tok2vec
    before = ngram_vectors(model)
    backprop(numpy.ones_like(Y))
    model.finish_update(Adam(0.01))
    assert not numpy.array_equal(before, ngram_vectors(model))
    old = model.predict(docs)
    model.attrs["resize_output"](model, 4)
    new = model.predict(docs)
    assert new.shape == (len(docs), 4)
    numpy.testing.assert_allclose(new[:, :3], old, atol=1e-6)
    numpy.testing.assert_allclose(new[:, 3], 0.0, atol=1e-6)


def test_v3_ngram_width_0_is_the_bag_alone(docs):
    model = build_textcat_v3(tok2vec=None, exclusive_classes=False, ngram_rows=64, ngram_width=0, nO=2)
    model.initialize(X=docs)
    assert not any(node.name == "torch_textcat_ngram_vectors" for node in model.walk())
    # the bag starts at zero: nothing learned, nothing predicted
    numpy.testing.assert_array_equal(model.predict(docs), 0.0)


@pytest.mark.parametrize("key,value,match", [
    ("ngram_width", -1, "`ngram_width` must be an integer >= 0"),
    ("ngram_rows", 1, "`ngram_rows` must be an integer >= 2"),
    ("hidden_width", 0, "`hidden_width` must be a positive integer"),
])
def test_v3_bad_settings_name_the_key(key, value, match):
    block = {"@architectures": "spacy-pytorch-shim.TorchTextCat.v3", "tok2vec": None,
             "exclusive_classes": True, key: value}
    with pytest.raises(ValueError, match=match):
        spacy.registry.resolve(Config({"model": block}))


def test_v3_needs_a_head():
    with pytest.raises(ValueError, match="tok2vec, ngram_size > 0, or both"):
        build_textcat_v3(tok2vec=None, exclusive_classes=True, ngram_size=0)
