"""Resizing Linear/Embedding layers, wrapped models and optimizer state."""
import numpy
import pytest
import torch
from numpy.testing import assert_allclose
from thinc.api import Adam

from spacy_pytorch_shim import TorchWrapper, resize_embedding, resize_linear


def test_resize_linear_grow_keeps_outputs_and_zeroes_new():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    X = torch.randn(5, 4)
    before = layer(X).detach()
    same = resize_linear(layer, out_features=5, bias_fill=-7.0)
    assert same is layer and layer.weight.shape == (5, 4) and layer.out_features == 5
    after = layer(X).detach()
    assert_allclose(after[:, :3], before, atol=1e-6)
    assert not layer.weight[3:].any()
    assert (layer.bias[3:] == -7.0).all()
    # New input columns are zero: extra features change nothing.
    resize_linear(layer, in_features=6)
    X6 = torch.cat([X, torch.randn(5, 2)], dim=1)
    assert_allclose(layer(X6).detach()[:, :3], before, atol=1e-6)


def test_resize_linear_shrink_drops_last_rows_and_columns():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    W, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    resize_linear(layer, out_features=2, in_features=3)
    assert torch.equal(layer.weight, W[:2, :3]) and torch.equal(layer.bias, b[:2])


def test_resize_embedding_both_directions():
    torch.manual_seed(0)
    layer = torch.nn.Embedding(5, 3, padding_idx=0)
    W = layer.weight.detach().clone()
    resize_embedding(layer, num_embeddings=8)
    assert torch.equal(layer.weight[:5], W) and not layer.weight[5:].any()
    assert layer(torch.tensor([7])).abs().sum() == 0
    resize_embedding(layer, num_embeddings=2)
    assert torch.equal(layer.weight, W[:2]) and layer.num_embeddings == 2
    with pytest.raises(ValueError, match="padding_idx"):
        resize_embedding(torch.nn.Embedding(5, 3, padding_idx=4), num_embeddings=3)
    with pytest.raises(ValueError, match="num_embeddings"):
        resize_embedding(layer, num_embeddings=0)


def build():
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Embedding(10, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3)
    )
    return TorchWrapper(module, output_layer="2", input_layer="0")


def train(model, optimizer, ids, n_out, steps=4):
    target = numpy.zeros((len(ids), n_out), dtype="f")
    target[:, -1] = 1.0
    for _ in range(steps):
        Y, backprop = model.begin_update(ids)
        backprop(Y - target)
        model.finish_update(optimizer)


def test_resize_output_with_optimizer_state_then_continue_training():
    model = build()
    optimizer = Adam(0.05)
    ids = numpy.asarray([1, 2, 3, 4], dtype="int64")
    train(model, optimizer, ids, 3)
    shim_id = model.shims[0].id
    before = model.predict(ids)
    with model.use_params(optimizer.averages):
        averaged_before = model.predict(ids)
    old_avg = optimizer.averages[(shim_id, "2.weight")].copy()
    model.attrs["resize_output"](model, 5)
    after = model.predict(ids)
    assert after.shape == (4, 5)
    assert_allclose(after[:, :3], before, atol=1e-6)
    assert_allclose(after[:, 3:], 0.0, atol=1e-6)
    assert optimizer.averages[(shim_id, "2.weight")].shape == (5, 6)
    assert numpy.array_equal(optimizer.averages[(shim_id, "2.weight")][:3], old_avg)
    assert optimizer.mom1[(shim_id, "2.weight")].size == 30
    with model.use_params(optimizer.averages):
        assert_allclose(model.predict(ids)[:, :3], averaged_before, atol=1e-6)
    # Training goes on with the same optimizer and learns the new output.
    train(model, optimizer, ids, 5, steps=30)
    assert model.predict(ids)[:, 4].mean() > 0.5
    with model.use_params(optimizer.averages):
        assert model.predict(ids).shape == (4, 5)


def test_resize_output_shrink_then_train():
    model = build()
    optimizer = Adam(0.05)
    ids = numpy.asarray([1, 2], dtype="int64")
    train(model, optimizer, ids, 3)
    before = model.predict(ids)
    model.attrs["resize_output"](model, 2)
    assert_allclose(model.predict(ids), before[:, :2], atol=1e-6)
    train(model, optimizer, ids, 2)
    assert optimizer.mom2[(model.shims[0].id, "2.weight")].size == 12


def test_resize_input_grows_embedding_rows_with_optimizer_state():
    model = build()
    optimizer = Adam(0.05)
    ids = numpy.asarray([1, 2, 3], dtype="int64")
    train(model, optimizer, ids, 3)
    before = model.predict(ids)
    model.attrs["resize_input"](model, 20)
    assert_allclose(model.predict(ids), before, atol=1e-6)
    assert optimizer.averages[(model.shims[0].id, "0.weight")].shape == (20, 6)
    train(model, optimizer, numpy.asarray([15, 19], dtype="int64"), 3)


def test_resize_output_on_model_without_output_layer():
    model = TorchWrapper(torch.nn.Linear(2, 2))
    assert "resize_output" not in model.attrs
    from spacy_pytorch_shim import resize_output

    with pytest.raises(ValueError, match="torch_output_layer"):
        resize_output(model, 3)


@pytest.mark.parametrize("ngram_size", [0, 2])
def test_dims_nO_follow_resize_output_on_every_level(ngram_size):
    """Thinc keeps the output width in dims['nO']: the wrappers and the
    combinators over them report the resized width, and the model still
    initializes (add/chain re-check it)."""
    import spacy
    from spacy_pytorch_shim.models.textcat import build_textcat_v2
    from spacy_pytorch_shim.models.tok2vec import build_torch_tok2vec

    model = build_textcat_v2(
        tok2vec=build_torch_tok2vec(width=16, rows=[50, 50, 50, 50]), exclusive_classes=True,
        hidden_width=8, ngram_size=ngram_size, ngram_rows=64, nO=3,
    )
    model.attrs["resize_output"](model, 7)
    wrappers = [node for node in model.walk() if "torch_output_layer" in node.attrs]
    assert wrappers and all(node.get_dim("nO") == 7 for node in wrappers)
    docs = [spacy.blank("en")("a short doc"), spacy.blank("en")("another one here")]
    model.initialize(X=docs)
    assert model.get_dim("nO") == 7
    model.attrs["resize_output"](model, 9)
    assert model.get_dim("nO") == 9 and all(node.get_dim("nO") == 9 for node in wrappers)
    model.initialize(X=docs)
    assert model.predict(docs).shape == (2, 9)
    # The tok2vec's own width is not an output width: it stays.
    assert model.get_ref("tok2vec").get_dim("nO") == 16
