"""to/from bytes/disk: parameters only, bit-exact, safe, all-or-nothing."""
import io
import pickle

import numpy
import pytest
import torch
from thinc.api import Adam

from spacy_pytorch_shim import TorchWrapper


def build(nO=3, seed=0):
    torch.manual_seed(seed)
    module = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, nO))
    return TorchWrapper(module, output_layer="2")


def state(model):
    return {k: v.detach().clone() for k, v in model.shims[0].module.state_dict().items()}


def trained():
    model = build()
    X = numpy.random.default_rng(0).random((6, 4), dtype="f")
    optimizer = Adam(0.1)
    for _ in range(3):
        Y, backprop = model.begin_update(X)
        backprop(Y)
        model.finish_update(optimizer)
    return model, X


def test_bytes_round_trip_is_bit_exact():
    model, X = trained()
    other = build(seed=1).from_bytes(model.to_bytes())
    a, b = state(model), state(other)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert numpy.array_equal(model.predict(X), other.predict(X))
    assert model.to_bytes() == other.to_bytes()


def test_disk_round_trip(tmp_path):
    model, X = trained()
    model.to_disk(tmp_path / "model")
    other = build(seed=1).from_disk(tmp_path / "model")
    assert numpy.array_equal(model.predict(X), other.predict(X))


def test_size_on_disk_is_close_to_raw_parameter_bytes(tmp_path):
    model = TorchWrapper(torch.nn.Linear(256, 256))
    model.to_disk(tmp_path / "model")
    raw = sum(t.numel() * t.element_size() for t in model.shims[0].module.state_dict().values())
    assert (tmp_path / "model").stat().st_size <= 1.05 * raw


def test_shape_mismatch_names_parameter_and_shapes_and_changes_nothing():
    model, _ = trained()
    data = model.to_bytes()
    other = build(nO=4, seed=1)
    before = state(other)
    # The model's recorded output width refuses the data first...
    with pytest.raises(ValueError, match=r"dimension 'nO'.*from 4 to 3"):
        other.from_bytes(data)
    # ...and the shim names the parameter and both shapes.
    with pytest.raises(ValueError, match=r"'2.weight'.*\(3, 5\).*\(4, 5\)"):
        other.shims[0].from_bytes(model.shims[0].to_bytes())
    after = state(other)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_missing_and_extra_parameters_are_named():
    model, _ = trained()
    other = TorchWrapper(torch.nn.Sequential(torch.nn.Linear(4, 5)))
    with pytest.raises(ValueError, match=r"unexpected parameters: .*2\.weight"):
        other.from_bytes(model.to_bytes())
    shim_bytes = other.shims[0].to_bytes()
    with pytest.raises(ValueError, match=r"missing parameters: .*1\.running_mean"):
        model.shims[0].from_bytes(shim_bytes)


def test_truncated_or_corrupt_data_raises_clear_error():
    model, _ = trained()
    before = state(model)
    shim_bytes = model.shims[0].to_bytes()
    with pytest.raises(ValueError, match="truncated or corrupt"):
        model.shims[0].from_bytes(shim_bytes[: len(shim_bytes) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        model.shims[0].from_bytes(b"\x00" * 64)
    with pytest.raises(ValueError):
        model.from_bytes(model.to_bytes()[:50])
    after = state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


class _RunsCode:
    def __reduce__(self):
        return (exec, ("import builtins; builtins.SPACY_PYTORCH_SHIM_PWNED = True",))


def test_pickle_payload_is_never_unpickled():
    import builtins

    model = TorchWrapper(torch.nn.Linear(2, 2))
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2, 2), "evil": _RunsCode()}, buffer)
    for payload in (buffer.getvalue(), pickle.dumps(_RunsCode())):
        with pytest.raises(ValueError, match="pickle"):
            model.shims[0].from_bytes(payload)
    # Wrapped in Thinc's msgpack container, too.
    msg = model.to_bytes()
    import srsly

    data = srsly.msgpack_loads(msg)
    data["shims"][0][0] = pickle.dumps(_RunsCode())
    with pytest.raises(ValueError, match="pickle"):
        model.from_bytes(srsly.msgpack_dumps(data))
    assert not hasattr(builtins, "SPACY_PYTORCH_SHIM_PWNED")
