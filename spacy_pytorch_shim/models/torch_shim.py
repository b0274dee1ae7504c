"""The Thinc shim that owns a torch module: updates, EMA, dropout, bytes."""
import contextlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from thinc.api import Optimizer, get_array_module, get_torch_default_device
from thinc.shims import Shim
from thinc.types import ArgsKwargs
from thinc.util import torch2xp, xp2torch

from ..parallel.sync import all_reduce_gradients, gradients_to_sync, sync_active  # issue-dist
from .convert import to_array
from .serialization import load_module_bytes, module_to_bytes

MAX_OPTIMIZERS = 4
INITIAL_LOSS_SCALE = 2.0**16
GROWTH_INTERVAL = 2000

# Modules whose dropout probability the caller's rate replaces, with the
# attribute that holds it.
_DROPOUT_ATTRS: Tuple[Tuple[type, str], ...] = (
    (torch.nn.modules.dropout._DropoutNd, "p"),
    (torch.nn.RNNBase, "dropout"),
    (torch.nn.MultiheadAttention, "dropout"),
)


class TorchShim(Shim):
    """Interface between a torch module and Thinc.

    Unlike Thinc's PyTorchShim, parameters are keyed in the optimizer as
    `(shim.id, parameter_name)` both when updating and in `use_params`, so
    `model.use_params(optimizer.averages)` really swaps in the averages.
    """

    _model: torch.nn.Module

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        mixed_precision: bool = False,
        device: Optional[torch.device] = None,
    ):
        if not isinstance(module, torch.nn.Module):
            raise TypeError(
                f"TorchWrapper needs a torch.nn.Module, got {type(module).__name__}"
            )
        super().__init__(module)
        device = device if device is not None else get_torch_default_device()
        module.to(device)
        self._mixed_precision = mixed_precision
        # Dynamic loss scaling for float16 on CUDA: gradients coming in are
        # multiplied by the scale, unscaled before the update; an overflow
        # halves the scale and skips the step, GROWTH_INTERVAL good steps double it.
        # (Decided here, not by device: a model built on the CPU may move.)
        self._loss_scale: Optional[float] = INITIAL_LOSS_SCALE if mixed_precision else None
        self._good_steps = 0
        self._is_train: Optional[bool] = None
        self._dropout_rate: Optional[float] = None
        # The optimizers (most recent last) that hold state for our parameters,
        # so that resizing a parameter resizes that state too. Thinc's
        # Optimizer cannot be weakly referenced, so only a few are kept.
        self._optimizers: List[Optimizer] = []
        # Hot-path caches (performance only, checked on every use):
        # the first parameter (owner module, attribute name, tensor) for
        # `device`, and per parameter its array view for `finish_update`.
        self._device_ref: Optional[Tuple[torch.nn.Module, str, torch.Tensor]] = None
        self._views: Optional[List[Tuple[str, torch.nn.Parameter, Any, Any, Any]]] = None

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
            for module in self._model.modules():
                for cls, attr in _DROPOUT_ATTRS:
                    if isinstance(module, cls):
                        if isinstance(module, torch.nn.RNNBase) and module.num_layers < 2:
                            continue
                        setattr(module, attr, float(dropout_rate))
            self._dropout_rate = dropout_rate

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
            if self._loss_scale is not None:
                grads.kwargs["grad_tensors"] = [
                    g * self._loss_scale for g in grads.kwargs["grad_tensors"]
                ]
            torch.autograd.backward(*grads.args, **grads.kwargs)
            return inputs

        return output, backprop

    def finish_update(self, optimizer: Optimizer) -> None:
        """Let the Thinc optimizer update every parameter that has a gradient,
        then drop the gradients (they are zeroed for the next step)."""
        self._remember(optimizer)
        # >>> issue-dist: data-parallel gradient sum across ranks (lead: re-place
        # before unscaling, clipping and the optimizer math of the fused update)
        if sync_active():
            all_reduce_gradients(self, gradients_to_sync(self._model))
        # <<< issue-dist
        if self._loss_scale is not None:
            if not self._unscale_grads():
                return
        # Torch calls first, then the optimizer calls back to back, then the
        # gradients dropped: interleaving them per parameter is measurably
        # slower (each torch call after an optimizer call runs cold).
        key_id = self.id
        updates = [
            (name, param, weights, xp, to_array(param.grad))
            for name, param, weights, xp, _where in self._param_views()
            if param.grad is not None
        ]
        for name, param, weights, xp, grad in updates:
            new_weights, _ = optimizer((key_id, name), weights, grad)
            if not xp.may_share_memory(new_weights, weights):
                param.data.copy_(xp2torch(new_weights, device=param.device).view_as(param))
        for update in updates:
            update[1].grad = None

    def _param_views(self) -> List[Tuple[str, torch.nn.Parameter, Any, Any, Any]]:
        """`(name, parameter, array view of its data, array module, where)` for
        every parameter, `where` being the data's pointer, shape and stride. The
        views are kept between steps and rebuilt for any parameter that was
        replaced (resizing) or whose data moved."""
        params = list(self._model.named_parameters())
        cached = self._views
        if cached is None or len(cached) != len(params):
            cached = [None] * len(params)  # type: ignore[list-item]
        views = []
        for (name, param), entry in zip(params, cached):
            where = (param.data_ptr(), param.shape, param.stride())
            if entry is None or entry[0] != name or entry[1] is not param or entry[4] != where:
                weights = torch2xp(param.data)
                entry = (name, param, weights, get_array_module(weights), where)
            views.append(entry)
        self._views = views
        return views

    def _forget_caches(self) -> None:
        self._views = None
        self._device_ref = None

    def __getstate__(self) -> Dict[str, Any]:
        # The caches hold views of the parameters' memory: never copy them.
        state = self.__dict__.copy()
        state["_views"] = None
        state["_device_ref"] = None
        return state

    def _remember(self, optimizer: Optimizer) -> None:
        if not self._optimizers or self._optimizers[-1] is not optimizer:
            others = [opt for opt in self._optimizers if opt is not optimizer]
            self._optimizers = others[-(MAX_OPTIMIZERS - 1):] + [optimizer]

    def _unscale_grads(self) -> bool:
        """Unscale gradients in place; False (and grads dropped) on overflow."""
        grads = [p.grad for p in self._model.parameters() if p.grad is not None]
        inv_scale = 1.0 / self._loss_scale
        found_inf = False
        for grad in grads:
            grad.mul_(inv_scale)
            found_inf = found_inf or not bool(torch.isfinite(grad).all())
        if found_inf:
            self._loss_scale /= 2.0
            self._good_steps = 0
            self._model.zero_grad(set_to_none=True)
        else:
            self._good_steps += 1
            if self._good_steps % GROWTH_INTERVAL == 0:
                self._loss_scale *= 2.0
        return not found_inf

    # ------------------------------------------------------------------- EMA
    @contextlib.contextmanager
    def use_params(self, params: Dict[Tuple[int, str], Any]) -> Iterator[None]:
        """Swap in the parameters found in `params` under `(self.id, name)`,
        restoring the current ones bit for bit on exit, also on error."""
        swaps = []
        for name, param in self._model.named_parameters():
            value = params.get((self.id, name))
            if value is not None:
                swaps.append((param, xp2torch(value, device=param.device)))
        if not swaps:
            yield
            return
        backups = [param.detach().clone() for param, _ in swaps]
        try:
            with torch.no_grad():
                for param, value in swaps:
                    param.copy_(value.view_as(param))
            yield
        finally:
            with torch.no_grad():
                for (param, _), backup in zip(swaps, backups):
                    param.copy_(backup)

    # -------------------------------------------------------- optimizer state
    def resize_optimizer_state(self, name: str, old_shape: Tuple[int, ...]) -> None:
        """Give parameter `name`'s optimizer state (Adam moments, averages) its
        new shape: kept where old and new overlap; new moments are zero and new
        averages start at the new parameter's values."""
        self._forget_caches()
        key = (self.id, name)
        param = self._model.get_parameter(name).detach()
        for optimizer in self._optimizers:
            stores = ((optimizer.mom1, False), (optimizer.mom2, False), (optimizer.averages, True))
            for store, like_param in stores:
                if store is None or key not in store:
                    continue
                old = store[key]
                xp = get_array_module(old)
                resized = param.clone() if like_param else torch.zeros_like(param)
                overlap = tuple(slice(0, min(a, b)) for a, b in zip(old_shape, param.shape))
                resized[overlap] = xp2torch(old, device=param.device).reshape(old_shape)[overlap]
                new = xp.ascontiguousarray(torch2xp(resized))
                store[key] = new.ravel() if old.ndim == 1 and param.ndim != 1 else new

    # --------------------------------------------------------------- devices
    def to_device(self, device_type: str, device_id: int) -> None:
        self._forget_caches()
        if device_type == "cpu":
            self._model.cpu()
        elif device_type == "gpu":
            self._model.cuda(device_id)
        else:
            raise ValueError(f"Invalid device_type: {device_type}. Try 'cpu' or 'gpu'")

    # --------------------------------------------------------- serialization
    def to_bytes(self) -> bytes:
        return module_to_bytes(self._model)

    def from_bytes(self, data: bytes) -> "TorchShim":
        load_module_bytes(self._model, data, self.device)
        return self


def _no_backprop(_: Any) -> Any:
    raise RuntimeError("Cannot backpropagate through a prediction (is_train=False)")
