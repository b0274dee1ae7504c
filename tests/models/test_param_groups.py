"""Frozen parameters and learn-rate multipliers (ParamGroups.v1)."""
import numpy
import pytest
import torch
from thinc.api import Adam, chain

from spacy_pytorch_shim import TorchWrapper
from spacy_pytorch_shim.models.param_groups import named_torch_parameters, with_param_groups


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Linear(6, 8)
        self.encoder = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8))
        self.head = torch.nn.Linear(8, 3)

    def forward(self, X):
        return self.head(self.encoder(self.embed(X)))


def build(**groups):
    return with_param_groups(TorchWrapper(Net(), name="net"), **groups)


def train(model, optimizer, n=20):
    rng = numpy.random.default_rng(0)
    for _ in range(n):
        X = rng.standard_normal((5, 6), dtype="f")
        Y, backprop = model.begin_update(X)
        backprop(Y - 1.0)
        model.finish_update(optimizer)
        optimizer.step_schedules()


def params(model):
    return {n: p.detach().clone() for n, p in model.shims[0].module.named_parameters()}


def test_frozen_parameters_get_no_gradient_no_state_and_never_change():
    model = build(frozen=["net.embed.*", "net.encoder.0.weight"])
    shim = model.shims[0]
    before = params(model)
    frozen = {"embed.weight", "embed.bias", "encoder.0.weight"}
    X = numpy.ones((5, 6), dtype="f")
    Y, backprop = model.begin_update(X)
    backprop(Y)
    grads = {n: p.grad for n, p in shim.module.named_parameters()}
    assert all(grads[n] is None for n in frozen)
    assert all(grads[n] is not None for n in grads if n not in frozen)
    model.finish_update(optimizer := Adam(0.01))
    train(model, optimizer)
    after = params(model)
    for name in before:
        if name in frozen:
            assert torch.equal(before[name], after[name]), name
        else:
            assert not torch.equal(before[name], after[name]), name
    for store in (optimizer.mom1, optimizer.mom2, optimizer.averages):
        assert {name for (_, name) in store} == set(before) - frozen
    # Averages of the frozen ones are not swapped in: they stay as they are.
    with model.use_params(optimizer.averages):
        inside = params(model)
    assert all(torch.equal(inside[n], before[n]) for n in frozen)


def test_frozen_encoder_skips_its_backward():
    """Freezing a whole encoder whose input needs no gradient leaves nothing
    to backpropagate into: autograd records no graph for it."""
    model = build(frozen=["net.embed.*", "net.encoder.*"])
    X = numpy.ones((5, 6), dtype="f")
    module = model.shims[0].module
    calls = []
    module.encoder.register_full_backward_hook(lambda *args: calls.append(1))
    with torch.enable_grad():
        out = module.encoder(module.embed(torch.from_numpy(X)))
    assert not out.requires_grad and not calls


def test_learn_rate_multipliers_are_thincs_lr_scale():
    """The same steps as calling the Thinc optimizer per parameter with
    lr_scale = the first matching multiplier."""
    multipliers = {"net.head.*": 3.0, "net.encoder.*": 0.1, "net.*": 0.5}
    model = build(learn_rate_multipliers=multipliers)
    assert model.shims[0].learn_rate_multipliers == {
        "embed.weight": 0.5, "embed.bias": 0.5, "head.weight": 3.0, "head.bias": 3.0,
        "encoder.0.weight": 0.1, "encoder.0.bias": 0.1, "encoder.2.weight": 0.1, "encoder.2.bias": 0.1,
    }
    reference = TorchWrapper(Net())
    ref_shim = reference.shims[0]
    ours_opt, ref_opt = Adam(0.01), Adam(0.01)
    rng = numpy.random.default_rng(0)
    for _ in range(20):
        X = rng.standard_normal((5, 6), dtype="f")
        for wrapper, optimizer in ((model, ours_opt), (reference, ref_opt)):
            Y, backprop = wrapper.begin_update(X)
            backprop(Y - 1.0)
        model.finish_update(ours_opt)
        for name, param in ref_shim.module.named_parameters():
            scale = model.shims[0].learn_rate_multipliers[name]
            weights, _ = ref_opt((ref_shim.id, name), param.data.numpy(), param.grad.numpy(), lr_scale=scale)
            param.data.copy_(torch.from_numpy(weights).view_as(param))
            param.grad = None
    ours, ref = params(model), params(reference)
    for name in ref:
        rel = (ours[name] - ref[name]).norm() / ref[name].norm()
        assert rel < 1e-6, name
    # The multipliers made a difference.
    plain = TorchWrapper(Net())
    train(plain, Adam(0.01), n=20)
    assert not torch.allclose(params(plain)["head.weight"], ours["head.weight"], atol=1e-4)


def test_names_span_every_wrapper_of_a_model():
    model = chain(TorchWrapper(torch.nn.Linear(2, 3), name="a"), TorchWrapper(torch.nn.Linear(3, 3), name="a"))
    assert list(named_torch_parameters(model)) == ["a.weight", "a.bias", "a#1.weight", "a#1.bias"]
    with_param_groups(model, frozen=["a#1.*"])
    assert [p.requires_grad for p in model.layers[1].shims[0].module.parameters()] == [False, False]
    assert all(p.requires_grad for p in model.layers[0].shims[0].module.parameters())


@pytest.mark.parametrize(
    "groups,message",
    [
        ({"frozen": ["net.embd.*"]}, r"frozen: the pattern 'net.embd.\*' matches no parameter of model 'net'\. Its parameters: net.embed.weight, net.embed.bias, net.encoder.0.weight"),
        ({"learn_rate_multipliers": {"tok2vec.*": 0.1}}, r"learn_rate_multipliers: the pattern 'tok2vec.\*' matches no parameter .*net.head.bias"),
        ({"learn_rate_multipliers": {"net.*": 0}}, r"learn_rate_multipliers\['net.\*'\] must be a positive number, got 0 \(to keep parameters fixed, list them in `frozen`\)"),
        ({"learn_rate_multipliers": {"net.*": "fast"}}, r"must be a positive number, got 'fast'"),
    ],
)
def test_bad_patterns_and_values_are_named(groups, message):
    with pytest.raises(ValueError, match=message):
        build(**groups)
