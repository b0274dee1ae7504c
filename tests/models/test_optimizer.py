"""The fused update against Thinc's own per-parameter optimizer: the same
weights, moments and averages after 100 steps, for every supported setting."""
import copy
import pickle

import numpy
import pytest
import torch
from thinc.api import (
    SGD,
    Adam,
    ArgsKwargs,
    Linear,
    Optimizer,
    PyTorchWrapper_v2,
    RAdam,
    chain,
    constant,
    warmup_linear,
)

from thinc.types import Ragged

from spacy_pytorch_shim import TorchWrapper
from spacy_pytorch_shim.models.optimizer import supports_fused
from spacy_pytorch_shim.models.textcat import BagOfNgrams, BagOfNgramsAndSubwords

N_STEPS = 100


class Mixed(torch.nn.Module):
    """Layers of every common kind: Linear, LayerNorm, a bidirectional LSTM,
    Conv1d, a bare 1-d parameter and one with a 0-d shape."""

    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Linear(6, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.lstm = torch.nn.LSTM(8, 4, bidirectional=True, batch_first=True)
        self.conv = torch.nn.Conv1d(8, 8, 3, padding=1)
        self.scale = torch.nn.Parameter(torch.linspace(0.5, 1.5, 8))
        self.out = torch.nn.Linear(8, 5)

    def forward(self, X):
        H = self.norm(torch.nn.functional.gelu(self.inp(X)))
        H, _ = self.lstm(H)
        H = H + self.conv(H.transpose(1, 2)).transpose(1, 2)
        return self.out(H * self.scale)[:, -1]


def build_pair():
    """Our wrapper and Thinc's PyTorchWrapper_v2 around identical modules,
    each followed by the same Thinc-native Linear layer."""
    torch.manual_seed(0)
    module = Mixed()
    ours = chain(TorchWrapper(copy.deepcopy(module)), Linear(3, 5))
    thinc = chain(PyTorchWrapper_v2(copy.deepcopy(module)), Linear(3, 5))
    X = numpy.zeros((2, 7, 6), dtype="f")
    ours.initialize(X=X)
    thinc.initialize(X=X)
    for name in ("W", "b"):
        thinc.layers[1].set_param(name, ours.layers[1].get_param(name).copy())
    return ours, thinc


def train(model, optimizer, seed=0):
    rng = numpy.random.default_rng(seed)
    for _ in range(N_STEPS):
        X = rng.standard_normal((4, 7, 6), dtype="f")
        target = rng.standard_normal((4, 3), dtype="f")
        Y, backprop = model.begin_update(X)
        backprop(Y - target)
        model.finish_update(optimizer)
        optimizer.step_schedules()


def assert_close(ours, reference, what, rtol=1e-6):
    """Relative difference of a tensor, ||ours - reference|| / ||reference||,
    within `rtol`; and no element off by more than 10 * rtol of the largest.
    (Both sides round in float32, in different orders: the trajectories part
    by a few ulp per step, and 100 steps of training amplify that.)"""
    ours, reference = numpy.asarray(ours, dtype="f8"), numpy.asarray(reference, dtype="f8")
    assert ours.shape == reference.shape, what
    norm = max(numpy.linalg.norm(reference), 1e-30)
    rel = numpy.linalg.norm(ours - reference) / norm
    assert rel <= rtol, f"{what}: relative difference {rel:.2e}"
    worst = numpy.abs(ours - reference).max() / max(numpy.abs(reference).max(), 1e-30)
    assert worst <= 10 * rtol, f"{what}: an element differs by {worst:.2e} of the largest"


def torch_state(model):
    shim = model.layers[0].shims[0]
    return shim, {n: p.detach().numpy() for n, p in shim._model.named_parameters()}


# Learn rates as in the shipped configs (Adam 0.002).
SETTINGS = {
    "adam-defaults": lambda: Adam(0.002),
    "adam-clip-active": lambda: Adam(0.002, grad_clip=0.05),
    "adam-no-clip": lambda: Adam(0.002, grad_clip=0.0),
    "adam-L2-weight-decay": lambda: Adam(0.002, L2=0.01, L2_is_weight_decay=True),
    "adam-L2-gradient": lambda: Adam(0.002, L2=0.01, L2_is_weight_decay=False),
    "adam-schedules": lambda: Adam(
        warmup_linear(0.004, 10, N_STEPS), beta1=[0.8] * 50 + [0.9] * 50, eps=constant(1e-6), grad_clip=[0.1, 0.5, 1.0]
    ),
    "adam-no-averages": lambda: Adam(0.002, use_averages=False),
    "sgd": lambda: SGD(0.02),
    "sgd-L2-gradient-clip": lambda: SGD(0.02, L2=0.01, L2_is_weight_decay=False, grad_clip=0.1),
    "sgd-L2-weight-decay": lambda: SGD(0.02, L2=0.01, use_averages=False),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_fused_update_equals_thincs_per_parameter_optimizer(setting):
    ours, thinc = build_pair()
    ours_opt, thinc_opt = SETTINGS[setting](), SETTINGS[setting]()
    assert supports_fused(ours_opt)
    train(ours, ours_opt)
    train(thinc, thinc_opt)
    ours_shim, ours_params = torch_state(ours)
    thinc_shim, thinc_params = torch_state(thinc)
    moved = 0
    for name, reference in thinc_params.items():
        assert_close(ours_params[name], reference, f"{setting}: weights of {name}")
        ours_key, thinc_key = (ours_shim.id, name), (thinc_shim.id, name)
        assert ours_opt.nr_update[ours_key] == thinc_opt.nr_update[thinc_key] == N_STEPS
        for store in ("mom1", "mom2", "averages"):
            if getattr(thinc_opt, store) is None:
                assert getattr(ours_opt, store) is None
                continue
            if thinc_key in getattr(thinc_opt, store):
                # Moments are running averages of gradients, which react to
                # the weights' last bits more than the weights do.
                rtol = 1e-6 if store == "averages" else 1e-5
                assert_close(
                    getattr(ours_opt, store)[ours_key], getattr(thinc_opt, store)[thinc_key],
                    f"{setting}: {store} of {name}", rtol=rtol,
                )
            else:
                assert ours_key not in getattr(ours_opt, store)
        moved += not numpy.allclose(reference, Mixed().state_dict()[name].numpy())
    assert moved, "training changed no weight: the comparison proves nothing"
    # The Thinc-native layer in the same chain is updated as before.
    for name in ("W", "b"):
        assert_close(ours.layers[1].get_param(name), thinc.layers[1].get_param(name), f"Linear {name}")


def test_optimizer_state_shares_memory_with_the_update():
    """The arrays spaCy reads (optimizer.averages etc.) are views of the tensors
    the update writes: a step changes them without any copy back."""
    ours, _ = build_pair()
    optimizer = Adam(0.002)
    train(ours, optimizer)
    shim = ours.layers[0].shims[0]
    key = (shim.id, "out.weight")
    average, mom1 = optimizer.averages[key], optimizer.mom1[key]
    before_avg, before_mom = average.copy(), mom1.copy()
    Y, backprop = ours.begin_update(numpy.ones((2, 7, 6), dtype="f"))
    backprop(Y)
    ours.finish_update(optimizer)
    assert optimizer.averages[key] is average and optimizer.mom1[key] is mom1
    assert not numpy.array_equal(average, before_avg) and not numpy.array_equal(mom1, before_mom)


def test_replaced_state_arrays_are_taken_over():
    """Anyone may put new arrays in the optimizer's stores (a loaded optimizer,
    resizing): the next step uses and updates those."""
    ours, thinc = build_pair()
    opt_a, opt_b = Adam(0.002), Adam(0.002)
    train(ours, opt_a)
    train(thinc, opt_b)
    shim = ours.layers[0].shims[0]
    for store in (opt_a.mom1, opt_a.mom2, opt_a.averages):
        for key in [k for k in store if k[0] == shim.id]:
            store[key] = store[key].copy()
    train(ours, opt_a, seed=1)
    train(thinc, opt_b, seed=1)
    thinc_shim, thinc_params = torch_state(thinc)
    _, ours_params = torch_state(ours)
    for name in thinc_params:
        assert_close(ours_params[name], thinc_params[name], name)
        assert_close(opt_a.averages[(shim.id, name)], opt_b.averages[(thinc_shim.id, name)], name)


def test_misshapen_state_names_the_parameter():
    ours, _ = build_pair()
    optimizer = Adam(0.002)
    train(ours, optimizer)
    shim = ours.layers[0].shims[0]
    optimizer.averages[(shim.id, "out.weight")] = numpy.zeros((8, 5), dtype="f")
    Y, backprop = ours.begin_update(numpy.ones((2, 7, 6), dtype="f"))
    backprop(Y)
    with pytest.raises(ValueError, match=r"averages for parameter 'out.weight' have shape \(8, 5\).*\(5, 8\)"):
        ours.finish_update(optimizer)


@pytest.mark.parametrize("make", [lambda: RAdam(0.002), lambda: Optimizer(0.01, beta1=0.0, beta2=0.999)])
def test_other_optimizers_take_the_per_parameter_path(make):
    """RAdam (and anything else fused_step does not reproduce) is called once
    per parameter, so it behaves exactly as in Thinc."""
    optimizer = make()
    assert not supports_fused(optimizer)
    if optimizer.use_radam:
        ours, thinc = build_pair()
        train(ours, optimizer)
        train(thinc, make())
        _, a = torch_state(ours)
        _, b = torch_state(thinc)
        for name in b:
            assert_close(a[name], b[name], name)


def test_a_pickled_or_copied_shim_carries_no_optimizer():
    ours, _ = build_pair()
    optimizer = Adam(0.002)
    train(ours, optimizer)
    shim = ours.layers[0].shims[0]
    assert shim.optimizers == [optimizer] and shim._state_cache
    for other in (pickle.loads(pickle.dumps(shim)), copy.deepcopy(shim)):
        assert other.optimizers == [] and other._state_cache == {}
        assert all(torch.equal(a, b) for a, b in zip(other._model.parameters(), shim._model.parameters()))
    # The live shim keeps its optimizer.
    assert shim.optimizers == [optimizer]


@pytest.mark.parametrize("setting", ["adam-defaults", "adam-L2-gradient"])
def test_foreach_adam_for_devices_without_the_fused_kernel(setting, monkeypatch):
    """The multi-tensor Adam used where torch has no fused kernel (older
    torch on the CPU, other devices) gives the same result."""
    from spacy_pytorch_shim.models import optimizer as fused

    monkeypatch.setitem(fused._FUSED_ADAM, "cpu", False)
    calls = []
    monkeypatch.setattr(fused, "_fused_adam", lambda *a: calls.append(a))
    ours, thinc = build_pair()
    ours_opt, thinc_opt = SETTINGS[setting](), SETTINGS[setting]()
    train(ours, ours_opt)
    train(thinc, thinc_opt)
    assert not calls
    ours_shim, ours_params = torch_state(ours)
    thinc_shim, thinc_params = torch_state(thinc)
    for name, reference in thinc_params.items():
        assert_close(ours_params[name], reference, f"{setting}: weights of {name}")
        assert_close(ours_opt.averages[(ours_shim.id, name)], thinc_opt.averages[(thinc_shim.id, name)], name)


def test_resizing_after_fused_training_resizes_the_state_and_training_goes_on():
    """Labels added after training: the output layer grows, its moments and
    averages grow with it (old rows kept), dims['nO'] follows, and the next
    fused steps update the new rows."""
    torch.manual_seed(0)
    model = TorchWrapper(torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)), output_layer="2")
    assert model.get_dim("nO") == 3
    optimizer = Adam(0.01)
    rng = numpy.random.default_rng(0)

    def step(n_out):
        Y, backprop = model.begin_update(rng.standard_normal((5, 4), dtype="f"))
        backprop(Y - rng.standard_normal((5, n_out), dtype="f"))
        model.finish_update(optimizer)

    for _ in range(5):
        step(3)
    key = (model.shims[0].id, "2.weight")
    old_avg, old_mom = optimizer.averages[key].copy(), optimizer.mom1[key].copy()
    model.attrs["resize_output"](model, 5)
    assert model.get_dim("nO") == 5
    assert optimizer.averages[key].shape == (5, 6) and optimizer.mom1[key].shape == (30,)
    numpy.testing.assert_array_equal(optimizer.averages[key][:3], old_avg)
    numpy.testing.assert_array_equal(optimizer.mom1[key][:18], old_mom)
    step(5)
    assert numpy.abs(model.shims[0].module[2].weight.detach().numpy()[3:]).sum() > 0
    assert numpy.abs(optimizer.averages[key][3:]).sum() > 0


# ---------------------------------------------------------------------------
# Parameters whose backward gives a sparse gradient (an embedding with
# `sparse=True`, as our n-gram bags are) are stepped exactly as their dense
# twins: every row, moments and weight decay included, in one reused buffer.

N_BAG_STEPS = 30
ROWS, N_LABELS = 50, 3

SPARSE_SETTINGS = {
    "adam-L2-weight-decay-clip": lambda: Adam(0.01, L2=0.01, L2_is_weight_decay=True, grad_clip=0.5),
    "adam-L2-gradient": lambda: Adam(0.01, L2=0.01, L2_is_weight_decay=False),
    "sgd": lambda: SGD(0.05, L2=0.01, use_averages=True),
}


class Bag(torch.nn.Module):
    """An n-gram bag plus a Linear: one sparse and two dense parameters."""

    def __init__(self, sparse: bool):
        super().__init__()
        self.bag = torch.nn.EmbeddingBag(ROWS, 4, mode="sum", sparse=sparse)
        self.output = torch.nn.Linear(4, N_LABELS)

    def forward(self, ids, offsets):
        return self.output(self.bag(ids, offsets))


def batches(seed=0):
    rng = numpy.random.default_rng(seed)
    for _ in range(N_BAG_STEPS):
        # Few rows of the table per batch, some of them repeated.
        ids = torch.from_numpy(rng.integers(0, ROWS // 3, size=12))
        offsets = torch.tensor([0, 5, 9])
        yield ids, offsets, rng.standard_normal((3, N_LABELS), dtype="f")


def train_bag(model, optimizer):
    for ids, offsets, target in batches():
        Y, backprop = model.begin_update((ids, offsets))
        backprop(Y - target)
        model.finish_update(optimizer)


def wrap(module):
    """Our wrapper around a module called with a tuple of torch tensors."""
    return TorchWrapper(module, convert_inputs=lambda model, X, is_train: (ArgsKwargs(args=X, kwargs={}), lambda d: None))


@pytest.mark.parametrize("setting", list(SPARSE_SETTINGS))
def test_a_sparse_embedding_trains_as_its_dense_twin(setting):
    torch.manual_seed(0)
    dense_module = Bag(sparse=False)
    sparse_module = copy.deepcopy(dense_module)
    sparse_module.bag.sparse = True
    dense, sparse = wrap(dense_module), wrap(sparse_module)
    dense_opt, sparse_opt = SPARSE_SETTINGS[setting](), SPARSE_SETTINGS[setting]()
    train_bag(dense, dense_opt)
    train_bag(sparse, sparse_opt)
    dense_id, sparse_id = dense.shims[0].id, sparse.shims[0].id
    for name, param in dense_module.named_parameters():
        reference = param.detach().numpy()
        assert_close(dict(sparse_module.named_parameters())[name].detach().numpy(), reference, f"{setting}: {name}")
        for store in ("mom1", "mom2", "averages"):
            if getattr(dense_opt, store) is not None and (dense_id, name) in getattr(dense_opt, store):
                assert_close(
                    getattr(sparse_opt, store)[(sparse_id, name)], getattr(dense_opt, store)[(dense_id, name)],
                    f"{setting}: {store} of {name}", rtol=1e-5,
                )
    # Rows no batch used were still stepped (L2, moments): the update is
    # dense, not "lazy" as torch's SparseAdam is.
    torch.manual_seed(0)
    initial = Bag(sparse=False).bag.weight.detach().numpy()[ROWS // 3 :]
    assert not numpy.allclose(sparse_module.bag.weight.detach().numpy()[ROWS // 3 :], initial)


def test_the_dense_buffer_is_reused_and_follows_a_resize():
    torch.manual_seed(0)
    model = TorchWrapper(BagOfNgrams(ROWS, 2), output_layer="output")
    shim = model.shims[0]
    optimizer = Adam(0.01)
    ptrs = []

    def step(n_labels):
        ids = numpy.asarray([1, 2, 3, 2, 7])
        lengths = numpy.asarray([3, 2], dtype="int32")
        Y, backprop = model.begin_update(Ragged(model.ops.asarray(ids), model.ops.asarray(lengths)))
        assert Y.shape == (2, n_labels)
        backprop(Y - 1.0)
        assert shim.module.output.weight.grad.is_sparse
        model.finish_update(optimizer)
        assert shim.module.output.weight.grad is None
        ptrs.append(shim._dense_grads["output.weight"].data_ptr())

    step(2)
    step(2)
    assert ptrs[0] == ptrs[1], "a new gradient buffer was allocated for the second step"
    model.attrs["resize_output"](model, 4)
    step(4)
    assert shim._dense_grads["output.weight"].shape == (ROWS, 4)
    # The new labels' column was learned from the gradient in the buffer.
    assert numpy.abs(shim.module.output.weight.detach().numpy()[[1, 2, 3, 7], 2:]).sum() > 0


def test_a_hand_made_uncoalesced_sparse_gradient_of_two_sparse_dims():
    """Any sparse `.grad` a custom module produces: repeated indices add up,
    and an index over two dimensions lands on its element."""
    torch.manual_seed(0)
    module = torch.nn.Linear(5, 4, bias=False)
    twin = copy.deepcopy(module)
    indices = torch.tensor([[0, 3, 0, 2], [1, 4, 1, 0]])
    values = torch.tensor([0.5, -1.0, 0.25, 2.0])
    sparse_grad = torch.sparse_coo_tensor(indices, values, (4, 5), check_invariants=True)
    assert not sparse_grad.is_coalesced() and sparse_grad.sparse_dim() == 2
    ours, reference = TorchWrapper(module), TorchWrapper(twin)
    initial = module.weight.detach().clone()
    module.weight.grad = sparse_grad
    twin.weight.grad = sparse_grad.to_dense()
    ours_opt, reference_opt = Adam(0.01), Adam(0.01)
    ours.finish_update(ours_opt)
    reference.finish_update(reference_opt)
    assert torch.equal(module.weight, twin.weight)
    assert not torch.equal(module.weight, initial), "the step changed nothing: the comparison proves nothing"


def test_the_subword_bag_has_sparse_gradients_and_trains_as_dense():
    torch.manual_seed(0)
    sparse_module = BagOfNgramsAndSubwords(ROWS, 2)
    dense_module = copy.deepcopy(sparse_module)
    dense_module.output.sparse = False
    args = (
        torch.tensor([0, 4, 5, 0, 6]), torch.tensor([3, 2]),  # n-grams per doc
        torch.tensor([7, 8, 9, 8, 10]), torch.tensor([3, 2]),  # subwords per distinct text
        torch.tensor([11, 5]),  # word row of each distinct text
        torch.tensor([0, 1, 1]), torch.tensor([2, 1]),  # text of each token, tokens per doc
    )
    target = numpy.asarray([[1.0, 0.0], [0.0, 1.0]], dtype="f")
    for module in (sparse_module, dense_module):
        model = wrap(module)
        optimizer = Adam(0.01, L2=0.01)
        for _ in range(5):
            Y, backprop = model.begin_update(args)
            backprop(Y - target)
            assert module.output.weight.grad.is_sparse == (module is sparse_module)
            model.finish_update(optimizer)
    assert_close(sparse_module.output.weight.detach().numpy(), dense_module.output.weight.detach().numpy(), "bag")
