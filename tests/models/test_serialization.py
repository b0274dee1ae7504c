"""to/from bytes/disk: parameters only, bit-exact, safe, all-or-nothing."""
import io
import pickle

import numpy
import pytest
import torch
from thinc.api import Adam, chain

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
    # The model and its shim name the parameter and both shapes.
    with pytest.raises(ValueError, match=r"'2.weight' has shape \(3, 5\) in the data but \(4, 5\)"):
        other.from_bytes(data)
    assert other.get_dim("nO") == 4
    with pytest.raises(ValueError, match=r"'2.weight'.*\(3, 5\).*\(4, 5\)"):
        other.shims[0].from_bytes(model.shims[0].to_bytes())
    after = state(other)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_missing_and_extra_parameters_are_named():
    model, _ = trained()
    other = TorchWrapper(torch.nn.Sequential(torch.nn.Linear(4, 5)), output_layer="0")
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


# ----------------------------------------------- hardened, all-or-nothing loads
import gc
import json
import struct

import srsly

from spacy_pytorch_shim.models import weights
from spacy_pytorch_shim.models.serialization import ModelLoadError, load_model_bytes, load_model_disk


def msgpack_with(data, change):
    msg = srsly.msgpack_loads(data)
    change(msg)
    return srsly.msgpack_dumps(msg)


def safetensors_bytes(header, buffer=b""):
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + buffer


def corrupt_containers(data):
    """Name -> bytes that no model can load, each a different cause."""
    shim = srsly.msgpack_loads(data)["shims"][0][0]
    with_shim = lambda blob: msgpack_with(data, lambda m: m["shims"][0].__setitem__(0, blob))
    return {
        "truncated": data[: len(data) // 2],
        "truncated by one byte": data[:-1],
        "empty": b"",
        "random": numpy.random.default_rng(0).bytes(4096),
        "trailing bytes": data + b"\x00",
        "msgpack list": srsly.msgpack_dumps([1, 2, 3]),
        "msgpack missing keys": srsly.msgpack_dumps({"nodes": []}),
        "nodes not a list": msgpack_with(data, lambda m: m.__setitem__("nodes", 3)),
        "node entry garbage": msgpack_with(data, lambda m: m["nodes"].__setitem__(0, "x")),
        "nesting bomb": b"\x91" * 200_000,
        "huge bin claim": b"\xc6\xff\xff\xff\xf0" + b"\x00" * 16,
        "huge array claim": b"\xdd\xff\xff\xff\xf0" + b"\x00" * 16,
        "huge map claim": b"\xdf\xff\xff\xff\xf0" + b"\x00" * 16,
        "shim truncated": with_shim(shim[:-7]),
        "shim empty": with_shim(b""),
        "shim not bytes": with_shim(12),
        "shim random": with_shim(numpy.random.default_rng(1).bytes(512)),
        "shim header length huge": with_shim(struct.pack("<Q", 2**62) + shim[8:]),
        "shim header not json": with_shim(struct.pack("<Q", 4) + b"{{{{"),
        "shim header json bomb": with_shim(struct.pack("<Q", 200_000) + b"[" * 200_000),
        "shim tensor claims huge shape": with_shim(
            safetensors_bytes({"0.weight": {"dtype": "F32", "shape": [2**40, 2**20], "data_offsets": [0, 16]}}, b"\x00" * 16)
        ),
        "shim pickle": with_shim(pickle.dumps({"weight": [1.0]})),
    }


def loaders(tmp_path):
    """Every way to load a model file into a TorchWrapper model, each taking
    (model, data) and giving the source its errors must name."""

    def from_disk(load):
        def loader(model, data):
            path = tmp_path / "model.bin"
            path.write_bytes(data)
            return load(model, path)

        return loader

    return {
        "load_model_bytes": (lambda model, data: load_model_bytes(model, data, source="model.bin"), "model.bin"),
        "Model.from_bytes": (lambda model, data: model.from_bytes(data), "{} bytes of data"),
        "Model.from_disk": (from_disk(lambda model, path: model.from_disk(path)), "model.bin"),
        "load_model_disk": (from_disk(load_model_disk), "model.bin"),
        "copy's from_bytes": (lambda model, data: model.copy().from_bytes(data), "bytes of data"),
    }


@pytest.mark.parametrize("loader", ["load_model_bytes", "Model.from_bytes", "Model.from_disk", "load_model_disk", "copy's from_bytes"])
@pytest.mark.parametrize("gc_enabled", [True, False])
def test_every_unreadable_model_file_gives_one_error_and_keeps_gc_state(gc_enabled, loader, tmp_path):
    model, X = trained()
    load, source = loaders(tmp_path)[loader]
    before, prediction = state(model), model.predict(X)
    was = gc.isenabled()
    try:
        for name, data in corrupt_containers(model.to_bytes()).items():
            (gc.enable if gc_enabled else gc.disable)()
            with pytest.raises(ModelLoadError, match=r"^(Could not read torch weights|Refusing to load torch weights)") as info:
                load(model, data)
            assert source.format(len(data)) in str(info.value) and "\n" not in str(info.value), name
            assert gc.isenabled() is gc_enabled, name
    finally:
        (gc.enable if was else gc.disable)()
    after = state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert numpy.array_equal(model.predict(X), prediction)


def test_component_loads_keep_gc_enabled_after_a_failure(tmp_path):
    """srsly disables gc and leaves it off when msgpack raises."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("torch_textcat", config={"model": {"tok2vec": None, "ngram_rows": 64}})
    nlp.get_pipe("torch_textcat").initialize(lambda: (x for x in []), labels=["A", "B"])
    data = nlp.get_pipe("torch_textcat").to_bytes()
    assert gc.isenabled()
    with pytest.raises(ValueError):
        nlp.get_pipe("torch_textcat").from_bytes(data[:-3])
    assert gc.isenabled()


def test_wrong_shape_is_refused_from_the_header_before_the_data_is_read(monkeypatch):
    model, _ = trained()
    data = model.to_bytes()
    other = build(nO=4, seed=1)

    def never(*args, **kwargs):
        raise AssertionError("the tensors were read although the header does not fit")

    monkeypatch.setattr(weights, "safetensors_load", never)
    with pytest.raises(ModelLoadError, match=r"'2.weight' has shape \(3, 5\) in the data but \(4, 5\)"):
        load_model_bytes(other, data)


LOADERS = ["load_model_bytes", "Model.from_bytes", "Model.from_disk"]


@pytest.mark.parametrize("loader", LOADERS)
def test_removed_shim_data_is_refused_not_left_random(loader, tmp_path):
    model, X = trained()
    fresh = build(seed=1)
    before = state(fresh)
    data = msgpack_with(model.to_bytes(), lambda m: m["shims"].__setitem__(0, []))
    with pytest.raises(ModelLoadError, match="0 shim entries in the data but 1"):
        loaders(tmp_path)[loader][0](fresh, data)
    assert all(torch.equal(before[k], state(fresh)[k]) for k in before)


@pytest.mark.parametrize("loader", LOADERS)
def test_attrs_that_are_not_data_cannot_be_overwritten(loader, tmp_path):
    load_model_bytes = loaders(tmp_path)[loader][0]
    model, X = trained()
    convert = model.attrs["convert_inputs"]
    hostile = msgpack_with(
        model.to_bytes(), lambda m: m["attrs"][0].__setitem__("convert_inputs", srsly.msgpack_dumps("x"))
    )
    with pytest.raises(ModelLoadError, match="'convert_inputs' is not data"):
        load_model_bytes(model, hostile)
    assert model.attrs["convert_inputs"] is convert
    unknown = msgpack_with(model.to_bytes(), lambda m: m["attrs"][0].__setitem__("new", srsly.msgpack_dumps(1)))
    with pytest.raises(ModelLoadError, match="no attr 'new'"):
        load_model_bytes(model, unknown)
    other_kind = msgpack_with(
        model.to_bytes(), lambda m: m["attrs"][0].__setitem__("output_bias_fill", srsly.msgpack_dumps("zero"))
    )
    with pytest.raises(ModelLoadError, match="'output_bias_fill' is str in the data but a number"):
        load_model_bytes(model, other_kind)
    assert model.attrs["output_bias_fill"] == 0.0
    model.predict(X)


def test_renamed_node_or_other_structure_is_refused_with_e149():
    model, _ = trained()
    renamed = msgpack_with(model.to_bytes(), lambda m: m["nodes"][0].__setitem__("name", "other"))
    with pytest.raises(ModelLoadError, match="E149"):
        load_model_bytes(model, renamed)
    with pytest.raises(ModelLoadError, match="E149"):
        load_model_bytes(chain(TorchWrapper(torch.nn.Linear(4, 3)), TorchWrapper(torch.nn.Linear(3, 3))), model.to_bytes())


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_unless_allowed(value):
    model, X = trained()
    with torch.no_grad():
        model.shims[0].module[0].weight[1, 2] = value
    data = model.to_bytes()
    fresh = build(seed=1)
    before = state(fresh)
    with pytest.raises(ModelLoadError, match="'0.weight' holds NaN or infinite values"):
        load_model_bytes(fresh, data)
    with pytest.raises(ValueError, match="NaN or infinite"):
        fresh.from_bytes(data)
    assert all(torch.equal(before[k], state(fresh)[k]) for k in before)
    load_model_bytes(fresh, data, allow_nonfinite=True)
    loaded = state(fresh)["0.weight"]
    assert torch.equal(loaded.isnan(), state(model)["0.weight"].isnan()) and not torch.isfinite(loaded[1, 2])


class WithExtraState(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        self.vocab = {"words": ["a", "b"], "version": 1}

    def forward(self, X):
        return self.linear(X)

    def get_extra_state(self):
        return dict(self.vocab)

    def set_extra_state(self, value):
        self.vocab = value


def test_modules_with_extra_state_save_and_load():
    model = TorchWrapper(WithExtraState())
    model.shims[0].module.vocab = {"words": ["x", "y", "z"], "version": 2}
    other = TorchWrapper(WithExtraState()).from_bytes(model.to_bytes())
    assert other.shims[0].module.vocab == {"words": ["x", "y", "z"], "version": 2}
    assert torch.equal(other.shims[0].module.linear.weight, model.shims[0].module.linear.weight)
    assert other.to_bytes() == model.to_bytes()


def test_extra_state_that_is_not_data_is_a_clear_error_on_save():
    module = WithExtraState()
    module.vocab = {"fn": print}
    with pytest.raises(ValueError, match="'_extra_state'.*tensor or JSON data"):
        TorchWrapper(module).to_bytes()


def test_combinators_load_all_or_nothing_through_the_public_functions(tmp_path):
    """chain() around wrappers is a plain Thinc Model: load_model_bytes and
    load_model_disk give it the same checks."""

    def pair(seed):
        torch.manual_seed(seed)
        return chain(TorchWrapper(torch.nn.Linear(4, 3)), TorchWrapper(torch.nn.Linear(3, 2)))

    model, X = pair(0), numpy.ones((2, 4), dtype="f")
    model.to_disk(tmp_path / "model")
    assert numpy.array_equal(load_model_disk(pair(1), tmp_path / "model").predict(X), model.predict(X))
    assert numpy.array_equal(load_model_bytes(pair(1), model.to_bytes()).predict(X), model.predict(X))
    fresh = pair(1)
    prediction = fresh.predict(X)
    # The second module's data is bad: the first one must not be loaded either.
    bad = msgpack_with(model.to_bytes(), lambda m: m["shims"][2].__setitem__(0, m["shims"][2][0][:-4]))
    (tmp_path / "bad").write_bytes(bad)
    with pytest.raises(ModelLoadError, match=r"^Could not read torch weights from .*bad, torch module of node 2"):
        load_model_disk(fresh, tmp_path / "bad")
    with pytest.raises(ModelLoadError, match=r"^Could not read torch weights from .*missing: No such file"):
        load_model_disk(fresh, tmp_path / "missing")
    assert numpy.array_equal(fresh.predict(X), prediction)
