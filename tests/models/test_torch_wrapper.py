"""Forward/backward, conversions, optimizer updates and dropout of TorchWrapper."""
import numpy
import pytest
import torch
from numpy.testing import assert_allclose
from thinc.api import SGD, Adam, ArgsKwargs, Model, Padded, Ragged, set_dropout_rate, warmup_linear

from spacy_pytorch_shim import TorchWrapper
from spacy_pytorch_shim.models.convert import convert_list_inputs, convert_padded_outputs, convert_ragged_outputs


def mlp(nI=4, nH=8, nO=3, p=0.0):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(nI, nH), torch.nn.ReLU(), torch.nn.Dropout(p), torch.nn.Linear(nH, nO)
    )


def weights(model: Model):
    return {k: v.detach().clone() for k, v in model.shims[0].module.state_dict().items()}


def test_one_tensor_module_needs_no_arguments():
    model = TorchWrapper(torch.nn.Linear(4, 2))
    X = numpy.ones((3, 4), dtype="f")
    Y, backprop = model.begin_update(X)
    assert isinstance(Y, numpy.ndarray) and Y.shape == (3, 2)
    dX = backprop(numpy.ones_like(Y))
    assert isinstance(dX, numpy.ndarray) and dX.shape == X.shape
    # d(sum(XW^T + b))/dX = column sums of W
    W = model.shims[0].module.weight.detach().numpy()
    assert_allclose(dX, numpy.tile(W.sum(0), (3, 1)), rtol=1e-6)


def test_predict_matches_torch_and_has_no_grad():
    module = mlp()
    model = TorchWrapper(module)
    X = numpy.random.default_rng(0).random((5, 4), dtype="f")
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(X)).numpy()
    assert_allclose(model.predict(X), expected, rtol=1e-6)


def test_list_ragged_padded_inputs_get_gradients_in_their_own_type():
    class Double(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, X, lengths=None):
            if isinstance(X, list):
                return [x * self.scale for x in X]
            return X * self.scale

    model = TorchWrapper(Double())
    list_model = TorchWrapper(Double(), convert_inputs=convert_list_inputs)
    ragged_model = TorchWrapper(Double(), convert_outputs=convert_ragged_outputs)
    padded_model = TorchWrapper(Double(), convert_outputs=convert_padded_outputs)
    arrays = [numpy.ones((2, 3), dtype="f"), numpy.ones((4, 3), dtype="f")]
    Y, backprop = list_model.begin_update(arrays)
    assert [y.shape for y in Y] == [(2, 3), (4, 3)] and Y[0][0, 0] == 2.0
    dX = backprop([numpy.ones_like(y) for y in Y])
    assert isinstance(dX, list) and dX[1].shape == (4, 3) and dX[1][0, 0] == 2.0

    ragged = Ragged(numpy.ones((6, 3), dtype="f"), numpy.asarray([2, 4], dtype="i"))
    Y, _ = model.begin_update(ragged)
    assert isinstance(Y, numpy.ndarray) and Y.shape == (6, 3)
    Y, backprop = ragged_model.begin_update(ragged)
    assert isinstance(Y, Ragged) and list(Y.lengths) == [2, 4]
    dX = backprop(Ragged(numpy.ones((6, 3), dtype="f"), Y.lengths))
    assert isinstance(dX, Ragged) and dX.dataXd[0, 0] == 2.0

    padded = Padded(
        numpy.ones((4, 2, 3), dtype="f"),
        numpy.asarray([2, 2, 1, 1], dtype="i"),
        numpy.asarray([4, 2], dtype="i"),
        numpy.asarray([0, 1], dtype="i"),
    )
    Y, backprop = padded_model.begin_update(padded)
    assert isinstance(Y, Padded) and Y.data.shape == (4, 2, 3)
    dX = backprop(Padded(numpy.ones((4, 2, 3), dtype="f"), Y.size_at_t, Y.lengths, Y.indices))
    assert isinstance(dX, Padded) and dX.data[0, 0, 0] == 2.0


def test_integer_inputs_train():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 2))
    model = TorchWrapper(module)
    ids = numpy.asarray([1, 2, 3], dtype="int64")
    before = weights(model)
    Y, backprop = model.begin_update(ids)
    backprop(numpy.ones_like(Y))
    model.finish_update(Adam(0.1))
    after = weights(model)
    assert not torch.equal(before["0.weight"][1], after["0.weight"][1])
    assert torch.equal(before["0.weight"][5], after["0.weight"][5])


def test_thinc_optimizer_updates_and_gradients_are_zeroed():
    model = TorchWrapper(mlp())
    X = numpy.random.default_rng(0).random((5, 4), dtype="f")
    before = weights(model)
    Y, backprop = model.begin_update(X)
    backprop(numpy.ones_like(Y))
    params = list(model.shims[0].module.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    model.finish_update(SGD(0.1))
    assert all(p.grad is None or not p.grad.any() for p in params)
    after = weights(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_gradients_do_not_leak_into_next_step():
    """Two identical steps with plain SGD move the weights by the same amount:
    the second step sees only its own gradient."""
    model = TorchWrapper(torch.nn.Linear(3, 1, bias=False))
    X = numpy.ones((2, 3), dtype="f")
    w0 = weights(model)["weight"]
    for _ in range(2):
        _, backprop = model.begin_update(X)
        backprop(numpy.ones((2, 1), dtype="f"))
        model.finish_update(SGD(0.1, grad_clip=0.0, L2=0.0))
    w2 = weights(model)["weight"]
    # Each step: grad = 2 per weight (two rows of ones), lr 0.1 -> -0.2.
    assert_allclose((w2 - w0).numpy(), numpy.full((1, 3), -0.4), rtol=1e-5)


def test_learn_rate_zero_leaves_weights_unchanged():
    model = TorchWrapper(mlp())
    X = numpy.random.default_rng(0).random((5, 4), dtype="f")
    before = weights(model)
    optimizer = Adam(0.0)
    for _ in range(3):
        Y, backprop = model.begin_update(X)
        backprop(numpy.ones_like(Y))
        model.finish_update(optimizer)
    after = weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_optimizer_settings_apply_grad_clip_and_l2():
    """grad_clip in Thinc's optimizer clips each parameter's gradient norm."""
    model = TorchWrapper(torch.nn.Linear(3, 1, bias=False))
    w0 = weights(model)["weight"]
    _, backprop = model.begin_update(numpy.ones((1, 3), dtype="f") * 100)
    backprop(numpy.ones((1, 1), dtype="f"))
    model.finish_update(SGD(1.0, grad_clip=1.0, L2=0.0))
    step = (weights(model)["weight"] - w0).numpy()
    assert_allclose(numpy.linalg.norm(step), 1.0, rtol=1e-5)


def test_learn_rate_schedule_is_followed():
    """warmup_linear starts at 0, then 1/10 of the rate after one step."""
    model = TorchWrapper(torch.nn.Linear(3, 1, bias=False))
    optimizer = SGD(warmup_linear(1.0, 10, 100), grad_clip=0.0, L2=0.0)
    steps = []
    for _ in range(2):
        w0 = weights(model)["weight"]
        _, backprop = model.begin_update(numpy.ones((1, 3), dtype="f"))
        backprop(numpy.ones((1, 1), dtype="f"))
        model.finish_update(optimizer)
        optimizer.step_schedules()
        steps.append((weights(model)["weight"] - w0).numpy())
    assert not steps[0].any()
    assert_allclose(steps[1], numpy.full((1, 3), -0.1), rtol=1e-5)


def test_dropout_rate_reaches_torch_modules_and_predict_never_drops():
    module = torch.nn.Sequential(torch.nn.Dropout(0.0), torch.nn.LSTM(4, 4, num_layers=2, dropout=0.0))
    model = TorchWrapper(torch.nn.Sequential(torch.nn.Dropout(0.0)))
    set_dropout_rate(model, 0.5)
    X = numpy.ones((200, 50), dtype="f")
    Y, _ = model.begin_update(X)
    dropout = model.shims[0].module[0]
    assert dropout.p == 0.5
    zero_fraction = (Y == 0).mean()
    assert 0.4 < zero_fraction < 0.6
    assert_allclose(Y[Y != 0], 2.0)
    assert (model.predict(X) == X).all()
    set_dropout_rate(model, 0.0)
    Y, _ = model.begin_update(X)
    assert (Y == X).all()
    # LSTM's inter-layer dropout is a dropout setting too.
    lstm_model = TorchWrapper(module)
    set_dropout_rate(lstm_model, 0.3)
    lstm_model.shims[0].set_mode(True, lstm_model.attrs["dropout_rate"])
    assert module[1].dropout == 0.3 and module[0].p == 0.3


def test_output_dropout_masks_outputs_and_gradients_alike():
    model = TorchWrapper(torch.nn.Identity(), output_dropout=True)
    model.shims[0].module.register_parameter("unused", torch.nn.Parameter(torch.zeros(1)))
    set_dropout_rate(model, 0.5)
    X = numpy.ones((100, 20), dtype="f")
    Y, backprop = model.begin_update(X)
    dX = backprop(numpy.ones_like(Y))
    assert 0.3 < (Y == 0).mean() < 0.7
    assert ((Y == 0) == (dX == 0)).all()
    assert (model.predict(X) == X).all()


def test_bad_inputs_give_clear_errors():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        TorchWrapper("not a module")
    with pytest.raises(ValueError, match="output_layer='head'"):
        TorchWrapper(mlp(), output_layer="head")
    with pytest.raises(ValueError, match="ReLU"):
        TorchWrapper(mlp(), output_layer="1")
    with pytest.raises(TypeError, match="convert_inputs"):
        TorchWrapper(mlp()).predict("text")


def test_ragged_outputs_must_line_up_with_inputs():
    class Pool(torch.nn.Module):
        def forward(self, data, lengths):
            return data[:1] * 1.0

    model = TorchWrapper(Pool(), convert_outputs=convert_ragged_outputs)
    ragged = Ragged(numpy.ones((3, 2), dtype="f"), numpy.asarray([1, 2], dtype="i"))
    with pytest.raises(ValueError, match=r"\(1, 2\).*Ragged"):
        model.predict(ragged)


def test_default_inputs_are_positional_or_keyword_arguments_as_in_thinc():
    """A list or tuple of arrays is several positional arguments, a dict or
    ArgsKwargs keyword arguments (Thinc's PyTorchWrapper_v2); the gradients
    come back in the same structure (a tuple for a list, as Thinc's)."""
    torch.manual_seed(0)
    bilinear = TorchWrapper(torch.nn.Bilinear(3, 2, 4))
    X1, X2 = numpy.ones((5, 3), dtype="f"), numpy.ones((5, 2), dtype="f")
    with torch.no_grad():
        expected = bilinear.shims[0].module(torch.from_numpy(X1), torch.from_numpy(X2)).numpy()
    for X in ([X1, X2], (X1, X2)):
        Y, backprop = bilinear.begin_update(X)
        assert_allclose(Y, expected, rtol=1e-6)
        dX = backprop(numpy.ones_like(Y))
        assert isinstance(dX, tuple) and [d.shape for d in dX] == [(5, 3), (5, 2)]
        assert numpy.abs(dX[0]).sum() > 0

    class Scaled(torch.nn.Module):
        def forward(self, x, *, scale, ids=None):
            assert ids is None or ids.dtype == torch.int64
            return x * scale

    keyword = TorchWrapper(Scaled())
    ids = numpy.arange(2, dtype="int64")
    Y, backprop = keyword.begin_update({"x": X1, "scale": numpy.full((5, 3), 2.0, dtype="f"), "ids": ids})
    assert (Y == 2.0).all()
    dX = backprop(numpy.ones_like(Y))
    assert set(dX) == {"x", "scale", "ids"} and (dX["x"] == 2.0).all() and dX["ids"] is None
    Y, backprop = keyword.begin_update(ArgsKwargs(args=(X1,), kwargs={"scale": 3.0}))
    assert (Y == 3.0).all()
    dX = backprop(numpy.ones_like(Y))
    assert isinstance(dX, ArgsKwargs) and (dX.args[0] == 3.0).all() and dX.kwargs == {"scale": 3.0}
