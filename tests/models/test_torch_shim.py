"""TorchShim as Thinc's PyTorchShim (TorchScript export included) and as a
copyable object: a deep copy trains on its own."""
import copy
import io

import numpy
import pytest
import spacy
import srsly
import torch
from numpy.testing import assert_allclose
from spacy.training import Example
from thinc.api import Adam, ArgsKwargs, PyTorchShim, TorchScriptWrapper_v1, pytorch_to_torchscript_wrapper

from spacy_pytorch_shim import TorchWrapper
from spacy_pytorch_shim.models.serialization import ModelLoadError
from spacy_pytorch_shim.models.torch_shim import TorchShim


def build(seed=0):
    torch.manual_seed(seed)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Dropout(0.2), torch.nn.Linear(8, 3))
    return TorchWrapper(module, output_layer="3")


def train(models, optimizers, steps=4):
    """Each model on its own data, its updates interleaved with the others'."""
    torch.manual_seed(0)  # the same dropout masks
    rng = numpy.random.default_rng(0)
    batches = [rng.random((5, 4), dtype="f") for _ in models]
    for _ in range(steps):
        for model, optimizer, X in zip(models, optimizers, batches):
            Y, backprop = model.begin_update(X)
            backprop(Y - 1.0)
            model.finish_update(optimizer)
    return batches


def weights(model):
    return {k: v.detach().clone() for k, v in model.shims[0].module.state_dict().items()}


def test_deep_copies_train_as_independently_built_models():
    def start():
        model = build()
        model.shims[0].learn_rate_multipliers["0.weight"] = 0.5
        train([model], [Adam(0.01)], steps=1)  # a copy leaves this optimizer behind
        return model

    original = start()
    copies = [copy.deepcopy(original) for _ in range(2)]
    for model in copies:
        shim = model.shims[0]
        assert shim.id != original.shims[0].id and shim.optimizers == [] and shim._state_cache == {}
        assert shim.learn_rate_multipliers == {"0.weight": 0.5}
    assert len({model.shims[0].id for model in copies}) == 2
    shared = Adam(0.01, use_averages=True)
    train(copies, [shared, shared])
    built = [start(), start()]
    own = [Adam(0.01, use_averages=True) for _ in built]
    train(built, own)
    X = numpy.ones((2, 4), dtype="f")
    for model, other, other_optimizer in zip(copies, built, own):
        a, b = weights(model), weights(other)
        assert all(torch.equal(a[k], b[k]) for k in a)
        with model.use_params(shared.averages), other.use_params(other_optimizer.averages):
            assert numpy.array_equal(model.predict(X), other.predict(X))
    assert not all(torch.equal(weights(copies[0])[k], weights(copies[1])[k]) for k in weights(copies[0]))


def test_deep_copy_of_a_pipeline_gives_every_shim_a_new_id():
    nlp = spacy.blank("en")
    nlp.add_pipe("torch_textcat", config={"model": {"tok2vec": None, "ngram_rows": 64}})
    nlp.initialize(lambda: [Example.from_dict(nlp.make_doc("a b"), {"cats": {"A": 1.0, "B": 0.0}})])
    copied = copy.deepcopy(nlp)
    shims = lambda nlp: [s for node in nlp.get_pipe("torch_textcat").model.walk() for s in node.shims]
    assert shims(nlp) and {s.id for s in shims(nlp)}.isdisjoint({s.id for s in shims(copied)})
    for a, b in zip(shims(nlp), shims(copied)):
        assert a.module is not b.module and a.to_bytes() == b.to_bytes()


def test_is_thincs_pytorch_shim_and_keeps_its_own_behaviour():
    model = build()
    shim = model.shims[0]
    assert isinstance(shim, PyTorchShim) and shim._model is shim.module
    X = numpy.random.default_rng(0).random((3, 4), dtype="f")
    inputs = ArgsKwargs(args=(torch.from_numpy(X),), kwargs={})
    # predict/begin_update set the mode through set_mode (PyTorchShim's
    # predict left the module in train mode behind its back).
    assert_allclose(shim.predict(inputs).numpy(), model.predict(X), rtol=1e-6)
    assert not shim.module.training
    shim.begin_update(inputs)
    assert shim.module.training
    assert_allclose(model.predict(X), shim.predict(inputs).numpy(), rtol=1e-6)
    # Thinc's serialization hooks are ours: safetensors, never pickle.
    assert shim._serialize_model(shim.module) == shim.to_bytes()
    buffer = io.BytesIO()
    torch.save(shim.module.state_dict(), buffer)
    thincs = srsly.msgpack_dumps({"config": {}, "state": buffer.getvalue()})
    with pytest.raises(ModelLoadError, match="Refusing to load torch weights stored with pickle"):
        PyTorchShim.from_bytes(shim, thincs)
    with pytest.raises(ModelLoadError, match="Refusing to load torch weights stored with pickle"):
        shim._deserialize_model(shim.module, buffer.getvalue(), shim.device)


def test_pytorch_to_torchscript_wrapper_gives_the_same_outputs():
    model = build()
    train([model], [Adam(0.01)])
    X = numpy.random.default_rng(1).random((6, 4), dtype="f")
    scripted = pytorch_to_torchscript_wrapper(model)
    assert isinstance(scripted.shims[0]._model, torch.jit.ScriptModule)
    assert_allclose(scripted.predict(X), model.predict(X), rtol=1e-6)
    loaded = TorchScriptWrapper_v1().from_bytes(scripted.to_bytes())
    assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-6)


def trained_pipe(factory, annotations):
    """A pipe trained a little, and docs of other lengths than the training ones."""
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(factory)
    texts = ["London is big", "I like Paris", "no place here"]
    examples = [Example.from_dict(nlp.make_doc(t), a) for t, a in zip(texts, annotations)]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    return pipe, [nlp.make_doc(t) for t in ["Berlin and Rome and Oslo today", "no", "a b c d e f g"]]


def assert_same_outputs(found, expected):
    for y, y_expected in zip(found if isinstance(found, list) else [found], expected if isinstance(expected, list) else [expected]):
        assert_allclose(y, y_expected, rtol=1e-5, atol=1e-6)


def test_a_trained_ner_head_exports_through_pytorch_to_torchscript_wrapper():
    pipe, docs = trained_pipe("torch_ner", [{"entities": [(0, 6, "GPE")]}, {"entities": [(7, 12, "GPE")]}, {}])
    expected = pipe.model.predict(docs)
    head = pipe.model.get_ref("output_layer")
    scripted = pytorch_to_torchscript_wrapper(head)
    assert isinstance(scripted.shims[0]._model, torch.jit.ScriptModule)
    assert pipe.model.replace_node(head, scripted)
    assert_same_outputs(pipe.model.predict(docs), expected)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_a_trained_textcat_exports_through_torch_jit():
    """Every torch module of the default torch_textcat as TorchScript, in
    Thinc's TorchScriptWrapper_v1 with the wrapper's converters: the same
    scores (the bag of subwords is traced: its forward does not script)."""
    cats = [{"cats": {"CITY": 1.0, "NONE": 0.0}}] * 2 + [{"cats": {"CITY": 0.0, "NONE": 1.0}}]
    pipe, docs = trained_pipe("torch_textcat", cats)
    expected = pipe.model.predict(docs)
    nodes = [node for node in pipe.model.walk() if node.shims and isinstance(node.shims[0], TorchShim)]
    example_args = {}
    hooks = [
        node.shims[0].module.register_forward_pre_hook(lambda _, args, node=node: example_args.__setitem__(node.id, args))
        for node in nodes
    ]
    pipe.model.predict(docs[2:])  # one doc of 7 tokens: the others have other shapes
    for hook in hooks:
        hook.remove()
    for node in nodes:
        traced = torch.jit.trace(node.shims[0].module.eval(), example_args[node.id], check_trace=False)
        exported = TorchScriptWrapper_v1(
            traced, convert_inputs=node.attrs["convert_inputs"], convert_outputs=node.attrs["convert_outputs"]
        )
        assert pipe.model.replace_node(node, exported)
    assert_same_outputs(pipe.model.predict(docs), expected)
