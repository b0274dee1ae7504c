"""model.use_params(optimizer.averages) really uses the averages (EMA)."""
import numpy
import pytest
import torch
from thinc.api import Adam, PyTorchWrapper_v2, chain, Linear

from spacy_pytorch_shim import TorchWrapper


def train(model, optimizer, steps=5, X=None):
    X = X if X is not None else numpy.random.default_rng(0).random((8, 4), dtype="f")
    for _ in range(steps):
        Y, backprop = model.begin_update(X)
        backprop(Y - 1.0)
        model.finish_update(optimizer)
    return X


def state(model):
    return {k: v.detach().clone() for k, v in model.shims[0].module.state_dict().items()}


def build():
    torch.manual_seed(0)
    return TorchWrapper(
        torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2))
    )


def test_use_params_swaps_in_averages_and_restores_bit_for_bit():
    model = build()
    optimizer = Adam(0.05)
    X = train(model, optimizer)
    trained = state(model)
    raw_prediction = model.predict(X)
    with model.use_params(optimizer.averages):
        module = model.shims[0].module
        for name, param in module.named_parameters():
            avg = optimizer.averages[(model.shims[0].id, name)]
            assert numpy.array_equal(param.detach().numpy(), avg)
        averaged_prediction = model.predict(X)
        averaged_bytes = model.to_bytes()
    assert not numpy.allclose(raw_prediction, averaged_prediction)
    after = state(model)
    assert all(torch.equal(trained[k], after[k]) for k in trained)
    assert numpy.array_equal(model.predict(X), raw_prediction)
    # to_bytes inside the block stored the averages.
    other = build().from_bytes(averaged_bytes)
    assert numpy.array_equal(other.predict(X), averaged_prediction)


def test_use_params_restores_on_exception():
    model = build()
    optimizer = Adam(0.05)
    train(model, optimizer)
    trained = state(model)
    with pytest.raises(KeyError):
        with model.use_params(optimizer.averages):
            raise KeyError("boom")
    after = state(model)
    assert all(torch.equal(trained[k], after[k]) for k in trained)


def test_buffers_without_averages_are_kept():
    model = build()
    optimizer = Adam(0.05)
    train(model, optimizer)
    running_mean = model.shims[0].module[1].running_mean.clone()
    with model.use_params(optimizer.averages):
        assert torch.equal(model.shims[0].module[1].running_mean, running_mean)


def test_use_params_without_averages_is_a_no_op():
    model = build()
    trained = state(model)
    with model.use_params({}):
        pass
    assert all(torch.equal(trained[k], v) for k, v in state(model).items())


def test_use_params_through_a_chain_of_thinc_layers():
    model = chain(build(), Linear(3, 2))
    X = numpy.random.default_rng(0).random((8, 4), dtype="f")
    model.initialize(X=X)
    optimizer = Adam(0.05)
    train(model, optimizer, X=X)
    raw = model.predict(X)
    with model.use_params(optimizer.averages):
        averaged = model.predict(X)
    assert not numpy.allclose(raw, averaged)
    assert numpy.array_equal(model.predict(X), raw)


def test_thinc_pytorch_wrapper_ignores_averages():
    """The trap this package exists for: Thinc's own wrapper silently keeps the
    raw weights. If Thinc fixes this, this test tells us."""
    torch.manual_seed(0)
    model = PyTorchWrapper_v2(torch.nn.Linear(4, 2))
    optimizer = Adam(0.05)
    X = train(model, optimizer)
    raw = model.predict(X)
    with model.use_params(optimizer.averages):
        assert numpy.array_equal(model.predict(X), raw)
