"""GPU behaviour (skipped without CUDA): tensors stay on the device, EMA and
mixed precision work there."""
import numpy
import pytest
import torch
from thinc.api import Adam, get_current_ops, use_ops

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
