"""Registered architectures: shapes, gradients reaching the tok2vec, resizing."""
import numpy
import pytest
import spacy
from thinc.api import Adam

from spacy_pytorch_shim.models.encoders import build_bilstm_encoder, build_cnn_encoder
from spacy_pytorch_shim.models.ner import build_ner_tagger
from spacy_pytorch_shim.models.textcat import (
    BagOfNgramsAndSubwords,
    LengthScaledBagOfNgramsAndSubwords,
    NormalizedPoolingHead,
    PoolingHead,
    build_textcat,
    build_textcat_v5,
    build_textcat_v6,
)
from spacy_pytorch_shim.models.tok2vec import build_torch_tok2vec

TEXTS = ["Alice lives in Paris", "", "one", "a much longer text with many different words in it"]


@pytest.fixture
def docs():
    nlp = spacy.blank("en")
    return [nlp.make_doc(text) for text in TEXTS]


def small_tok2vec(encoder="cnn"):
    build = build_cnn_encoder if encoder == "cnn" else build_bilstm_encoder
    return build_torch_tok2vec(width=16, rows=[50, 10, 10, 10], encoder=build(width=16))


def embed_weights(model):
    tok2vec = model.get_ref("tok2vec") if model.has_ref("tok2vec") else model
    wrapper = next(node for node in tok2vec.walk() if node.shims)
    return wrapper.shims[0].module.embed.weight.detach().clone()


def assert_update_changes_embeddings(model, backprop, dY):
    """The gradient reaches the torch tok2vec's embedding table."""
    before = embed_weights(model)
    backprop(dY)
    model.finish_update(Adam(0.01))
    assert not numpy.array_equal(before, embed_weights(model))


@pytest.mark.parametrize("encoder", ["cnn", "bilstm"])
def test_tok2vec_gives_one_row_per_token_and_trains(docs, encoder):
    model = small_tok2vec(encoder)
    model.initialize(X=docs)
    Y, backprop = model.begin_update(docs)
    assert [y.shape for y in Y] == [(len(doc), 16) for doc in docs]
    assert_update_changes_embeddings(model, backprop, [numpy.ones_like(y) for y in Y])


def test_encoder_width_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"encoder's width \(8\).*tok2vec width \(16\)"):
        build_torch_tok2vec(width=16, encoder=build_cnn_encoder(width=8))


def test_ner_tagger_shapes_gradients_and_resize(docs):
    model = build_ner_tagger(tok2vec=small_tok2vec(), hidden_width=8, nO=5)
    model.initialize(X=docs)
    Y, backprop = model.begin_update(docs)
    assert [y.shape for y in Y] == [(len(doc), 5) for doc in docs]
    assert_update_changes_embeddings(model, backprop, [numpy.ones_like(y) for y in Y])
    old = model.predict(docs)
    model.attrs["resize_output"](model, 9)
    new = model.predict(docs)
    assert all(n.shape[1] == 9 and numpy.allclose(n[:, :5], o, atol=1e-6) for n, o in zip(new, old))


def test_ner_tagger_on_spacy_tok2vec(docs):
    from spacy.ml.models import build_hash_embed_cnn_tok2vec

    tok2vec = build_hash_embed_cnn_tok2vec(
        width=16, depth=1, embed_size=100, window_size=1, maxout_pieces=2,
        subword_features=True, pretrained_vectors=None,
    )
    model = build_ner_tagger(tok2vec=tok2vec, hidden_width=0, nO=5)
    model.initialize(X=docs)
    Y, backprop = model.begin_update(docs)
    assert [y.shape for y in Y] == [(len(doc), 5) for doc in docs]
    backprop([numpy.ones_like(y) for y in Y])
    model.finish_update(Adam(0.01))


@pytest.mark.parametrize("ngram_size", [0, 2])
def test_textcat_shapes_gradients_and_resize(docs, ngram_size):
    model = build_textcat(tok2vec=small_tok2vec(), exclusive_classes=True, hidden_width=8, ngram_size=ngram_size, ngram_rows=64, nO=3)
    model.initialize(X=docs)
    Y, backprop = model.begin_update(docs)
    assert Y.shape == (len(docs), 3)
    assert_update_changes_embeddings(model, backprop, numpy.ones_like(Y))
    old = model.predict(docs)
    model.attrs["resize_output"](model, 4)
    new = model.predict(docs)
    assert new.shape == (len(docs), 4)
    numpy.testing.assert_allclose(new[:, :3], old, atol=1e-6)
    numpy.testing.assert_allclose(new[:, 3], 0.0, atol=1e-6)


@pytest.mark.parametrize("build,bag_type", [(build_textcat_v5, LengthScaledBagOfNgramsAndSubwords), (build_textcat_v6, BagOfNgramsAndSubwords)])
def test_normalized_versions_shapes_gradients_and_resize(docs, build, bag_type):
    model = build(tok2vec=small_tok2vec(), exclusive_classes=True, hidden_width=8, ngram_rows=64, nO=3)
    model.initialize(X=docs)
    module = {node.name: node.shims[0].module for node in model.walk() if node.shims}
    assert type(module["torch_textcat_pooling"]) is NormalizedPoolingHead and type(module["torch_textcat_ngrams"]) is bag_type
    Y, backprop = model.begin_update(docs)
    assert Y.shape == (len(docs), 3) and numpy.isfinite(Y).all()  # the empty doc too
    assert_update_changes_embeddings(model, backprop, numpy.ones_like(Y))
    old = model.predict(docs)
    model.attrs["resize_output"](model, 4)
    numpy.testing.assert_allclose(model.predict(docs)[:, :3], old, atol=1e-6)


def test_normalized_pooling_sees_the_mean_whatever_the_scales():
    """Token vectors whose mean is small beside their max (as a pretrained
    encoder's): the normalized head's output is the hidden layer over each
    pooled vector layer-normalized, so it does not change with the vectors'
    scale; the plain head's output does."""
    import torch

    torch.manual_seed(0)
    X, lengths = torch.randn(7, 6) * 0.05, torch.tensor([3, 4])
    X[:, 0] += 2.0  # one large component
    for head_type in (PoolingHead, NormalizedPoolingHead):
        torch.manual_seed(1)
        head = head_type(6, 5, 2, 0.0).eval()
        means, maxes = head.pool(X, lengths)
        torch.testing.assert_close(means[0], X[:3].mean(0))
        torch.testing.assert_close(maxes[1], X[3:].amax(0))
        if head_type is NormalizedPoolingHead:
            normed = [torch.nn.functional.layer_norm(v, (6,)) for v in (means, maxes)]
            torch.testing.assert_close(head(X, lengths), head.output(head.hidden(torch.cat(normed, dim=1))))
        # Scaling every token vector by 10 scales mean and max alike.
        scaled = head(10 * X, lengths)
        same = torch.allclose(scaled, head(X, lengths), atol=1e-5)
        assert same == (head_type is NormalizedPoolingHead), head_type


@pytest.mark.parametrize("encoder", ["cnn", "bilstm"])
def test_docs_in_a_batch_do_not_see_each_other(docs, encoder):
    model = small_tok2vec(encoder)
    model.initialize(X=docs)
    batched = model.predict(docs)
    for doc, together in zip(docs, batched):
        alone = model.predict([doc])[0]
        numpy.testing.assert_allclose(alone, together, atol=1e-5)


def test_textcat_bag_of_ngrams_alone(docs):
    model = build_textcat(tok2vec=None, exclusive_classes=False, ngram_size=2, ngram_rows=64, nO=2)
    model.initialize(X=docs)
    Y, backprop = model.begin_update(docs)
    assert Y.shape == (len(docs), 2) and not model.has_ref("tok2vec")
    backprop(numpy.ones_like(Y))
    model.finish_update(Adam(0.01))
    assert model.predict(docs)[0].any()
    with pytest.raises(ValueError, match="tok2vec, ngram_size > 0, or both"):
        build_textcat(tok2vec=None, exclusive_classes=True, ngram_size=0)


V2_WITHOUT_DROPOUT = {
    "spacy-pytorch-shim.CNNEncoder.v2": {"width": 16},
    "spacy-pytorch-shim.BiLSTMEncoder.v2": {"width": 16, "depth": 2},
    "spacy-pytorch-shim.TorchNERTagger.v2": {"tok2vec": {"@architectures": "spacy-pytorch-shim.TorchTok2Vec.v1", "width": 16, "rows": [100, 100, 100, 100]}},
    "spacy-pytorch-shim.TorchTextCat.v2": {"tok2vec": {"@architectures": "spacy-pytorch-shim.TorchTok2Vec.v1", "width": 16, "rows": [100, 100, 100, 100]}, "exclusive_classes": True},
}


@pytest.mark.parametrize("name", list(V2_WITHOUT_DROPOUT))
def test_v2_architectures_take_dropout_from_the_caller_only(name):
    """The .v2 architectures have no `dropout` argument (the v1 one was always
    replaced by the caller's rate in training): a config that sets one is
    refused, and the torch dropout modules follow the caller's rate."""
    import torch
    from thinc.api import Config, set_dropout_rate

    from spacy_pytorch_shim.models.torch_shim import TorchShim

    block = {"@architectures": name, **V2_WITHOUT_DROPOUT[name]}
    with pytest.raises(Exception, match="dropout"):
        spacy.registry.resolve(Config({"model": {**block, "dropout": 0.1}}))
    built = spacy.registry.resolve(Config({"model": block}))["model"]
    if isinstance(built, torch.nn.Module):
        modules = [built]
    else:
        set_dropout_rate(built, 0.3)
        modules = []
        for node in built.walk():
            for shim in node.shims:
                if isinstance(shim, TorchShim):
                    shim.set_mode(True, node.attrs["dropout_rate"])
                    modules.append(shim.module)
    rates = [
        getattr(m, "p", getattr(m, "dropout", None))
        for module in modules
        for m in module.modules()
        if isinstance(m, (torch.nn.Dropout, torch.nn.LSTM))
    ]
    assert rates
    expected = 0.0 if isinstance(built, torch.nn.Module) else 0.3
    assert all(rate == expected for rate in rates), rates
