"""GPU behaviour (skipped without CUDA): tensors stay on the device, EMA and
mixed precision work there."""
import numpy
import pytest
import torch
from thinc.api import SGD, Adam, get_current_ops, use_ops
from thinc.shims.pytorch_grad_scaler import PyTorchGradScaler

from spacy_pytorch_shim import TorchWrapper

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def cupy_ops():
    cupy = pytest.importorskip("cupy")
    with use_ops("cupy"):
        yield cupy


def build(**kwargs):
    torch.manual_seed(0)
    return TorchWrapper(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)), **kwargs)


@pytest.mark.parametrize("mixed_precision", [False, True])
def test_training_on_gpu_keeps_tensors_on_device(cupy_ops, mixed_precision):
    model = build(mixed_precision=mixed_precision)
    assert model.shims[0].device.type == "cuda"
    X = cupy_ops.asarray(numpy.random.default_rng(0).random((32, 8), dtype="f"))
    optimizer = Adam(0.01)
    before = {k: v.clone() for k, v in model.shims[0].module.state_dict().items()}
    # Loss scaling starts at 2**16 and halves on each overflow: give it steps.
    for _ in range(30):
        Y, backprop = model.begin_update(X)
        assert isinstance(Y, cupy_ops.ndarray)
        dX = backprop(Y - 1)
        assert isinstance(dX, cupy_ops.ndarray)
        model.finish_update(optimizer)
    after = model.shims[0].module.state_dict()
    assert all(t.device.type == "cuda" for t in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    raw = model.predict(X)
    with model.use_params(optimizer.averages):
        averaged = model.predict(X)
    assert not cupy_ops.allclose(raw, averaged)
    assert cupy_ops.array_equal(model.predict(X), raw)


def test_gpu_bytes_round_trip(cupy_ops):
    model = build()
    X = cupy_ops.ones((3, 8), dtype="f")
    other = build().from_bytes(model.to_bytes())
    assert cupy_ops.array_equal(model.predict(X), other.predict(X))


def test_mixed_precision_unscales_with_thincs_scaler_and_skips_overflow(cupy_ops):
    """Thinc's PyTorchGradScaler scales the backward pass; the update sees
    unscaled gradients, and an overflowing step changes nothing and halves
    the scale."""
    X = cupy_ops.ones((2, 8), dtype="f")
    scaler = PyTorchGradScaler(True, init_scale=1024.0)
    reference, scaled = build(), build(mixed_precision=True, grad_scaler=scaler)
    assert scaled.shims[0]._grad_scaler is scaler
    for model in (reference, scaled):
        Y, backprop = model.begin_update(X)
        backprop(cupy_ops.ones_like(Y))
        model.finish_update(SGD(0.1, grad_clip=0.0, L2=0.0))
    ref, ours = reference.shims[0].module.state_dict(), scaled.shims[0].module.state_dict()
    assert all(torch.allclose(ref[k], ours[k], rtol=1e-2, atol=1e-3) for k in ref)
    before = {k: v.clone() for k, v in ours.items()}
    Y, backprop = scaled.begin_update(X)
    backprop(cupy_ops.full(Y.shape, numpy.inf, dtype="f"))
    scaled.finish_update(SGD(0.1, grad_clip=0.0, L2=0.0))
    assert float(scaler._scale) == 512.0
    after = scaled.shims[0].module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
