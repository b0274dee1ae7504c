"""`spacy-pytorch-shim.TorchTok2Vec.v4`: v3 plus word dropout. In training a
token's whole-word attributes are dropped together, at `word_dropout` or the
caller's rate if higher; with a caller's rate of 0 or at inference nothing
is dropped; 0 builds v3."""
import numpy
import pytest
import spacy
import torch
from thinc.api import fix_random_seed

from spacy_pytorch_shim.models.encoders import build_cnn_encoder_v2
from spacy_pytorch_shim.models.tok2vec import build_torch_tok2vec_v3, build_torch_tok2vec_v4

WIDTH = 16
TEXT = " ".join(["the cat sat on the mat"] * 100)  # 600 tokens


def small(build, **kwargs):
    kwargs = {"width": WIDTH, "rows": [50, 10, 10, 10], "char_width": 8, **kwargs}
    return build(encoder=build_cnn_encoder_v2(width=WIDTH, depth=1), **kwargs)


def module_of(model):
    return next(node for node in model.walk() if node.shims).shims[0].module


def mixed_features(model, docs, *, is_train, caller_rate):
    """The per-token feature vectors (n_tokens, n_features, width) that the
    encoder's `mix` layer gets."""
    module = module_of(model)
    seen = []
    hook = module.mix.register_forward_hook(lambda layer, inputs, output: seen.append(inputs[0]))
    try:
        next(node for node in model.walk() if node.shims).attrs["dropout_rate"] = caller_rate
        model.begin_update(docs) if is_train else model.predict(docs)
    finally:
        hook.remove()
    (X,) = seen
    return X.reshape(X.shape[0], -1, WIDTH).detach()


@pytest.fixture
def docs():
    return [spacy.blank("en").make_doc(TEXT)]


def dropped(features, reference):
    """Per token and feature: was the feature zeroed?"""
    return (features == 0).all(dim=2) & ~(reference == 0).all(dim=2)


@pytest.mark.parametrize("word_dropout,caller_rate,expected", [(0.3, 0.05, 0.3), (0.3, 0.1, 0.3), (0.3, 0.6, 0.6)])
def test_whole_word_attributes_are_dropped_together_at_the_higher_rate(docs, word_dropout, caller_rate, expected):
    fix_random_seed(0)
    model = small(build_torch_tok2vec_v4, attrs=["NORM", "LOWER", "PREFIX", "SUFFIX"], rows=[50, 50, 10, 10], word_dropout=word_dropout)
    model.initialize(X=docs)
    reference = mixed_features(model, docs, is_train=False, caller_rate=None)
    features = mixed_features(model, docs, is_train=True, caller_rate=caller_rate)
    gone = dropped(features, reference)
    norm, lower, others = gone[:, 0], gone[:, 1], gone[:, 2:]
    assert torch.equal(norm, lower)  # one draw per token for both word attributes
    assert abs(norm.float().mean().item() - expected) < 0.07
    assert abs(others.float().mean().item() - caller_rate) < 0.07
    kept = ~norm
    torch.testing.assert_close(features[kept, 0], reference[kept, 0] / (1 - expected))


def test_nothing_is_dropped_at_inference(docs):
    fix_random_seed(0)
    model = small(build_torch_tok2vec_v4, word_dropout=0.5)
    model.initialize(X=docs)
    first, second = model.predict(docs)[0], model.predict(docs)[0]
    numpy.testing.assert_array_equal(first, second)
    assert not (mixed_features(model, docs, is_train=False, caller_rate=0.5) == 0).all(dim=2).any()


def test_a_caller_rate_of_zero_drops_nothing(docs):
    fix_random_seed(0)
    model = small(build_torch_tok2vec_v4, word_dropout=0.5)
    model.initialize(X=docs)
    reference = mixed_features(model, docs, is_train=False, caller_rate=None)
    torch.testing.assert_close(mixed_features(model, docs, is_train=True, caller_rate=0.0), reference)


def test_word_dropout_zero_is_v3(docs):
    outputs = []
    for build, kwargs in [(build_torch_tok2vec_v3, {}), (build_torch_tok2vec_v4, {"word_dropout": 0.0})]:
        fix_random_seed(0)
        model = small(build, **kwargs)
        model.initialize(X=docs)
        fix_random_seed(1)
        Y, _ = model.begin_update(docs)
        outputs.append(Y[0])
    numpy.testing.assert_array_equal(*outputs)


def test_the_default_trains_differently_from_v3(docs):
    """The control for the test above: with word dropout the same seeds give
    another training output."""
    outputs = []
    for build in [build_torch_tok2vec_v3, build_torch_tok2vec_v4]:
        fix_random_seed(0)
        model = small(build)
        model.initialize(X=docs)
        fix_random_seed(1)
        Y, _ = model.begin_update(docs)
        outputs.append(Y[0])
    assert not numpy.allclose(*outputs)


@pytest.mark.parametrize("kwargs,message", [
    ({"word_dropout": 1.0}, r"TorchTok2Vec.v4: `word_dropout` must be a number in \[0, 1\), got 1.0"),
    ({"word_dropout": -0.1}, r"TorchTok2Vec.v4: `word_dropout` must be a number in \[0, 1\), got -0.1"),
    ({"attrs": ["PREFIX", "SHAPE"], "rows": [10, 10]}, r"TorchTok2Vec.v4: `word_dropout` \(0.3\) drops the whole-word attributes .* but `attrs` \(\['PREFIX', 'SHAPE'\]\) has none"),
])
def test_bad_settings_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small(build_torch_tok2vec_v4, **kwargs)


def test_without_word_attributes_word_dropout_zero_builds(docs):
    model = small(build_torch_tok2vec_v4, attrs=["PREFIX", "SHAPE"], rows=[10, 10], word_dropout=0.0)
    model.initialize(X=docs)
    assert model.predict(docs)[0].shape == (len(docs[0]), WIDTH)


def test_shipped_ner_configs_use_word_dropout():
    from pathlib import Path

    from thinc.api import Config

    root = Path(__file__).parents[2]
    for name in ["ner.cfg", "ner_accuracy.cfg"]:
        tok2vec = Config().from_disk(root / "configs" / name, interpolate=False)["components"]["torch_ner"]["model"]["tok2vec"]
        assert tok2vec["@architectures"] == "spacy-pytorch-shim.TorchTok2Vec.v4" and tok2vec["word_dropout"] == pytest.approx(0.3)
