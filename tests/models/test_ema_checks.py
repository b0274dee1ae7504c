"""use_params refuses averages that do not fit, naming the parameter."""
import numpy
import pytest
import torch
from thinc.api import Adam

from spacy_pytorch_shim import TorchWrapper


def build():
    torch.manual_seed(0)
    return TorchWrapper(torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 3)), output_layer="1")


def params(model):
    return {k: v.detach().clone() for k, v in model.shims[0].module.named_parameters()}


def test_averages_of_another_shape_but_the_same_size_are_refused_not_reinterpreted():
    model = build()
    key = (model.shims[0].id, "1.weight")  # shape (3, 6)
    before = params(model)
    with pytest.raises(ValueError, match=r"'1.weight'.*\(6, 3\).*\(3, 6\)"):
        with model.use_params({key: numpy.ones((6, 3), dtype="f")}):
            pass
    after = params(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_flat_averages_of_the_parameters_size_are_used():
    """Thinc's optimizers may hold a parameter's averages flattened."""
    model = build()
    key = (model.shims[0].id, "1.weight")
    flat = numpy.arange(18, dtype="f")
    with model.use_params({key: flat}):
        assert numpy.array_equal(model.shims[0].module[1].weight.detach().numpy(), flat.reshape(3, 6))


def test_averages_left_stale_by_a_resize_are_refused_clearly():
    model = build()
    optimizer = Adam(0.05)
    X = numpy.random.default_rng(0).random((5, 4), dtype="f")
    Y, backprop = model.begin_update(X)
    backprop(Y)
    model.finish_update(optimizer)
    stale = dict(optimizer.averages)  # a copy the resize cannot reach
    model.attrs["resize_output"](model, 5)
    before = params(model)
    with pytest.raises(ValueError, match=r"'1.weight'.*shape \(3, 6\).*shape \(5, 6\)"):
        with model.use_params(stale):
            pass
    after = params(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    with model.use_params(optimizer.averages):  # the optimizer's own were resized
        assert model.predict(X).shape == (5, 5)
