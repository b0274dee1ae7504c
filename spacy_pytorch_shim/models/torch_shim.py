"""The Thinc shim that owns a torch module: forward, backward, the update."""
import contextlib
import copy
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from thinc.api import Optimizer, get_array_module, get_torch_default_device
from thinc.shims import PyTorchShim, Shim
from thinc.shims.pytorch_grad_scaler import PyTorchGradScaler
from thinc.types import ArgsKwargs
from thinc.util import iterate_recursive, xp2torch

from . import collective
from .convert import to_array
from .optimizer import StateCache, fused_step, supports_fused
from .weights import load_module_bytes, module_to_bytes

MAX_OPTIMIZERS = 4

# Modules whose dropout probability the caller's rate replaces, with the
# attribute that holds it.
_DROPOUT_ATTRS: Tuple[Tuple[type, str], ...] = (
    (torch.nn.modules.dropout._DropoutNd, "p"),
    (torch.nn.RNNBase, "dropout"),
    (torch.nn.MultiheadAttention, "dropout"),
)


class TorchShim(PyTorchShim):
    """Interface between a torch module and Thinc.

    A Thinc `PyTorchShim` (what code that looks for Thinc's torch shim, such
    as `pytorch_to_torchscript_wrapper`, expects: `_model`, `device`,
    `_grad_scaler`, `_mixed_precision`), with every method of it overridden
    here: parameters are keyed in the optimizer as `(shim.id,
    parameter_name)` both when updating and in `use_params`, so
    `model.use_params(optimizer.averages)` really swaps in the averages;
    Thinc's Adam and SGD run as one multi-tensor update (see `optimizer.py`);
    weights are saved as safetensors, never pickled (Thinc's
    `serialize_model`/`deserialize_model` hooks are ours too). Parameters
    with `requires_grad=False` are frozen: no gradient, no optimizer state,
    no change. `learn_rate_multipliers` (set by `ParamGroups.v1`) maps
    parameter names to Thinc's `lr_scale`, times those the shim's own model
    sets in `builtin_learn_rate_multipliers` (an encoder's layer decay). A
    deep copy gets its own id, so it trains on its own.
    """

    _model: torch.nn.Module

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        mixed_precision: bool = False,
        grad_scaler: Optional[PyTorchGradScaler] = None,
        device: Optional[torch.device] = None,
    ):
        if not isinstance(module, torch.nn.Module):
            raise TypeError(
                f"TorchWrapper needs a torch.nn.Module, got {type(module).__name__}"
            )
        # Thinc's constructor: the device, the loss scaler for float16 on CUDA
        # (a no-op when disabled, used only while the module is on CUDA), one
        # memory pool for cupy and torch.
        super().__init__(
            module,
            mixed_precision=mixed_precision,
            grad_scaler=grad_scaler,
            device=device,
            serialize_model=module_to_bytes,
            deserialize_model=_deserialize_module,
        )
        self._grads_scaled = False
        self._is_train: Optional[bool] = None
        self._dropout_rate: Optional[float] = None
        self.learn_rate_multipliers: Dict[str, float] = {}
        self.builtin_learn_rate_multipliers: Dict[str, float] = {}
        # The optimizers (most recent last) that hold state for our parameters,
        # so that resizing a parameter resizes that state too. Thinc's
        # Optimizer cannot be weakly referenced, so only a few are kept; they
        # are never pickled or copied with the shim.
        self._optimizers: List[Optimizer] = []
        # Hot-path caches (performance only, checked on every use): the first
        # parameter (owner module, attribute name, tensor) for `device`, and
        # the tensors behind the optimizers' state arrays.
        self._device_ref: Optional[Tuple[torch.nn.Module, str, torch.Tensor]] = None
        self._state_cache: StateCache = {}
        # One dense gradient per parameter whose backward gives a sparse one,
        # reused every step (see `_densify_sparse_gradients`).
        self._dense_grads: Dict[str, torch.Tensor] = {}

    @property
    def module(self) -> torch.nn.Module:
        return self._model

    @property
    def device(self) -> torch.device:
        # The device of the first parameter. Its owner and name are cached: an
        # identity check tells whether the module still holds that tensor.
        ref = self._device_ref
        if ref is not None and ref[0]._parameters.get(ref[1]) is ref[2]:
            return ref[2].device
        for module in self._model.modules():
            for name, param in module._parameters.items():
                if param is not None:
                    self._device_ref = (module, name, param)
                    return param.device
        for buffer in self._model.buffers():
            return buffer.device
        return get_torch_default_device()

    # ------------------------------------------------------------------ mode
    def set_mode(self, is_train: bool, dropout_rate: Optional[float]) -> None:
        """Put the module in train/eval mode and give its dropout layers the
        caller's rate. Cheap when nothing changed since the last call."""
        if is_train != self._is_train:
            self._model.train(is_train)
            self._is_train = is_train
        if is_train and dropout_rate is not None and dropout_rate != self._dropout_rate:
            self._set_dropout(float(dropout_rate))
            self._dropout_rate = dropout_rate

    def _set_dropout(self, rate: float) -> None:
        """Give every dropout layer of the module the rate `rate`."""
        for module in self._model.modules():
            for cls, attr in _DROPOUT_ATTRS:
                if isinstance(module, cls):
                    if isinstance(module, torch.nn.RNNBase) and module.num_layers < 2:
                        continue
                    setattr(module, attr, rate)

    # --------------------------------------------------------------- compute
    def __call__(self, inputs: ArgsKwargs, is_train: bool):
        device_type = self.device.type
        if self._mixed_precision or torch.is_autocast_enabled(device_type):
            # enabled=False also switches off an autocast region around us.
            # float16 autocast on CUDA only: on the CPU it would give bfloat16
            # outputs, which numpy cannot hold.
            autocast: Any = torch.autocast(
                device_type=device_type,
                enabled=self._mixed_precision and device_type == "cuda",
            )
        else:
            autocast = contextlib.nullcontext()
        if not is_train:
            with torch.no_grad(), autocast:
                return self._model(*inputs.args, **inputs.kwargs), _no_backprop
        with autocast:
            output = self._model(*inputs.args, **inputs.kwargs)

        def backprop(grads: ArgsKwargs) -> ArgsKwargs:
            scaling = self._mixed_precision and device_type == "cuda"
            if scaling:
                # Loss scaling, done locally: scaling the incoming gradients
                # scales all gradients below them by the same factor.
                grads.kwargs["grad_tensors"] = self._grad_scaler.scale(grads.kwargs["grad_tensors"])
                self._grads_scaled = True
            torch.autograd.backward(*grads.args, **grads.kwargs)
            if scaling:
                # The input gradients leave us: unscale them now. Parameter
                # gradients stay scaled (they may accumulate over several
                # backward passes) until finish_update.
                input_grads = [x.grad for x in iterate_recursive(_has_grad, inputs)]
                self._grad_scaler.unscale(input_grads)
            return inputs

        return output, backprop

    def predict(self, inputs: ArgsKwargs) -> Any:
        """The module's output in eval mode, without gradients."""
        self.set_mode(False, None)
        return self(inputs, is_train=False)[0]

    def begin_update(self, inputs: ArgsKwargs) -> Tuple[Any, Any]:
        """The module's output in train mode, and the backprop callback."""
        self.set_mode(True, None)
        return self(inputs, is_train=True)

    def finish_update(self, optimizer: Optimizer) -> None:
        """Update every parameter that has a gradient as `optimizer` would,
        in one multi-tensor step where the optimizer is Thinc's Adam or SGD,
        then drop the gradients. A step whose scaled float16 gradients
        overflowed is skipped (and the loss scale lowered)."""
        self._remember(optimizer)
        self._densify_sparse_gradients()
        ranks = collective.current()
        if ranks is not None:
            # Data-parallel training: the gradients of the global batch on
            # every rank, before any use of them.
            ranks.reduce_gradients(self)
        names: List[str] = []
        params: List[torch.Tensor] = []
        grads: List[torch.Tensor] = []
        for name, param in self._model.named_parameters():
            # Thinc's optimizer leaves empty parameters alone.
            if param.grad is not None and param.numel():
                names.append(name)
                params.append(param)
                grads.append(param.grad)
        if not names:
            return
        skip = False
        if self._grads_scaled:
            skip = self._grad_scaler.unscale(grads)
            self._grads_scaled = False
        if not skip:
            multipliers, builtin = self.learn_rate_multipliers, self.builtin_learn_rate_multipliers
            lr_scales = [multipliers.get(name, 1.0) * builtin.get(name, 1.0) for name in names]
            with torch.no_grad():
                if supports_fused(optimizer) and all(_fusable(p, g) for p, g in zip(params, grads)):
                    fused_step(optimizer, self.id, names, [p.data for p in params], grads, lr_scales, self._state_cache)
                else:
                    self._per_parameter_step(optimizer, names, params, grads, lr_scales)
        for param in params:
            param.grad = None
        self._grad_scaler.update()

    def _densify_sparse_gradients(self) -> None:
        """Replace each sparse `.grad` (an embedding with `sparse=True`) by
        the same gradient in a dense buffer kept for that parameter, so the
        step below updates every row as Thinc's optimizer would (moments and
        weight decay included). A large embedding's dense backward allocates
        a fresh table-sized gradient every update instead, which fragments
        glibc's heap: gigabytes of resident memory for a hashed bag."""
        for name, param in self._model.named_parameters():
            grad = param.grad
            if grad is None or not grad.is_sparse:
                continue
            dense = self._dense_grads.get(name)
            if dense is None or dense.shape != param.shape or dense.dtype != grad.dtype or dense.device != param.device:
                dense = self._dense_grads[name] = torch.empty(param.shape, dtype=grad.dtype, device=param.device)
            dense.zero_()
            # Each sparse row adds into the dense rows of its index; repeated
            # indices (an uncoalesced gradient) add up.
            dense.view(-1, *grad.shape[grad.sparse_dim():]).index_add_(
                0, _flat_sparse_index(grad), grad._values()
            )
            param.grad = dense

    def _per_parameter_step(
        self,
        optimizer: Optimizer,
        names: List[str],
        params: List[torch.Tensor],
        grads: List[torch.Tensor],
        lr_scales: List[float],
    ) -> None:
        """Any other optimizer (RAdam, a custom callable): called once per
        parameter with Thinc's signature."""
        for name, param, grad, lr_scale in zip(names, params, grads, lr_scales):
            weights = to_array(param.data)
            kwargs = {"lr_scale": lr_scale} if lr_scale != 1.0 else {}
            new_weights, _ = optimizer((self.id, name), weights, to_array(grad), **kwargs)
            if not get_array_module(weights).may_share_memory(new_weights, weights):
                param.data.copy_(xp2torch(new_weights, device=param.device).view_as(param))

    def clear_caches(self) -> None:
        """Forget the cached views (after a parameter or state array was replaced)."""
        self._device_ref = None
        self._state_cache = {}
        self._dense_grads = {}

    def __getstate__(self) -> Dict[str, Any]:
        # Caches hold views of the parameters' and optimizers' memory, and
        # optimizers belong to the training run: never copy them.
        state = self.__dict__.copy()
        state["_device_ref"] = None
        state["_state_cache"] = {}
        state["_dense_grads"] = {}
        state["_optimizers"] = []
        return state

    def __deepcopy__(self, memo: Dict[int, Any]) -> "TorchShim":
        # A copy trains on its own: optimizers key their moments and averages
        # by (shim.id, name), so it gets a fresh id.
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__dict__.update(copy.deepcopy(self.__getstate__(), memo))
        with Shim.global_id_lock:
            Shim.global_id += 1
            copied.id = Shim.global_id
        return copied

    @property
    def optimizers(self) -> List[Optimizer]:
        """The optimizers that updated this shim (most recent last)."""
        return list(self._optimizers)

    def _remember(self, optimizer: Optimizer) -> None:
        if not hasattr(optimizer, "mom1"):
            return  # a plain callable (nlp.rehearse passes a new one each call) has no state to resize
        if not self._optimizers or self._optimizers[-1] is not optimizer:
            others = [opt for opt in self._optimizers if opt is not optimizer]
            self._optimizers = others[-(MAX_OPTIMIZERS - 1):] + [optimizer]

    # ------------------------------------------------------------------- EMA
    @contextlib.contextmanager
    def use_params(self, params: Dict[Tuple[int, str], Any]) -> Iterator[None]:
        """Swap in the parameters found in `params` under `(self.id, name)`,
        restoring the current ones bit for bit on exit, also on error. Every
        value is checked first: one of another shape (averages left stale by a
        resize) is refused with the parameter's name and both shapes, never
        reinterpreted; a flat vector of the parameter's size is Thinc's layout."""
        swaps = []
        for name, param in self._model.named_parameters():
            value = params.get((self.id, name))
            if value is None:
                continue
            shape = tuple(value.shape)
            if shape != tuple(param.shape) and shape != (param.numel(),):
                raise ValueError(
                    f"Cannot use the averaged parameters of '{name}' in torch module "
                    f"{type(self._model).__name__}: they have shape {shape} but the parameter "
                    f"has shape {tuple(param.shape)} (averages kept from before a resize?)"
                )
            swaps.append((param, xp2torch(value, device=param.device).reshape(param.shape)))
        if not swaps:
            yield
            return
        backups = [param.detach().clone() for param, _ in swaps]
        try:
            with torch.no_grad():
                for param, value in swaps:
                    param.copy_(value)
            yield
        finally:
            with torch.no_grad():
                for (param, _), backup in zip(swaps, backups):
                    param.copy_(backup)

    # --------------------------------------------------------------- devices
    def to_device(self, device_type: str, device_id: int) -> None:
        self.clear_caches()
        if device_type == "cpu":
            self._model.cpu()
        elif device_type == "gpu":
            self._model.cuda(device_id)
        else:
            raise ValueError(f"Invalid device_type: {device_type}. Try 'cpu' or 'gpu'")
        self._grad_scaler.to_(self.device)

    # --------------------------------------------------------- serialization
    def to_bytes(self) -> bytes:
        return module_to_bytes(self._model)

    def from_bytes(self, data: bytes) -> "TorchShim":
        load_module_bytes(self._model, data, self.device)
        return self


def _deserialize_module(module: torch.nn.Module, data: bytes, device: torch.device) -> torch.nn.Module:
    """Thinc's `deserialize_model` hook, reading our safetensors (never pickle)."""
    load_module_bytes(module, data, device)
    return module


def _has_grad(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.grad is not None


def _flat_sparse_index(grad: torch.Tensor) -> torch.Tensor:
    """The row of the parameter viewed as (rows of its sparse dims, dense
    dims) that each stored value of the sparse `grad` belongs to."""
    indices = grad._indices()
    sizes = grad.shape[: grad.sparse_dim()]
    flat = indices[0]
    for dim in range(1, len(sizes)):
        flat = flat * sizes[dim] + indices[dim]
    return flat


def _fusable(param: torch.Tensor, grad: torch.Tensor) -> bool:
    """float32 parameters with flat views; Thinc's CPU kernels take only float32."""
    return param.dtype == torch.float32 and grad.dtype == torch.float32 and param.is_contiguous()


def _no_backprop(_: Any) -> Any:
    raise RuntimeError("Cannot backpropagate through a prediction (is_train=False)")
