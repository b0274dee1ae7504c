"""The shim that owns a Hugging Face encoder and its tokenizer: TorchShim's
update, averages and dropout, plus saving the encoder's config, tokenizer
files and weights together, and loading them with no network."""
import contextlib
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import srsly
import torch
from thinc.types import ArgsKwargs

from ..serialization import read_msgpack
from ..weights import ModelLoadError, _anonymous_source, apply_module_state, module_to_bytes, read_module_state
from ..torch_shim import TorchShim
from .layer_decay import layer_decay_multipliers
from .module import PooledEncoder, autocast_dtype, bound_onednn_kernel_cache
from .int8 import INT8, quantize_linears

FORMAT = "spacy-pytorch-shim-hf/1"
_KEYS = {"format", "config", "tokenizer", "weights", "quantization"}
# Where the attention modules of encoder families keep the dropout on their
# attention probabilities: a Dropout child of a module whose class name ends
# with this (BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT, DeBERTa), or a float
# attribute of this name passed to scaled_dot_product_attention (ModernBERT).
SELF_ATTENTION_SUFFIX = "SelfAttention"
FLOAT_ATTENTION_DROPOUT = "attention_dropout"
# Module attributes that a family builds as nn.Identity when its config's
# rate is 0 (ModernBERT's attention output dropout): a Dropout(0) in their
# place lets the caller's rate reach them.
IDENTITY_DROPOUT_ATTRS = ("out_drop",)


class HFShim(TorchShim):
    """A TorchShim whose module is a `PooledEncoder`, empty until the encoder
    is loaded: from `from_pretrained` at initialization, or from saved bytes
    (`read_bytes`; any saved encoder of hidden size `width`). Callbacks given to `when_built` run each time an encoder
    is put in (e.g. ParamGroups' freezing), after `layer_decay` has set the
    built-in learn-rate multipliers."""

    _model: PooledEncoder

    def __init__(
        self,
        module: PooledEncoder,
        *,
        width: Optional[int] = None,
        mixed_precision: bool = False,
        layer_decay: float = 1.0,
        attention_dropout: Optional[float] = None,
        device: Optional[torch.device] = None,
    ):
        super().__init__(module, mixed_precision=mixed_precision, device=device)
        self.width = width
        self.layer_decay = layer_decay
        self.attention_dropout = attention_dropout
        self.tokenizer: Any = None
        self.quantization: Optional[str] = None
        self._when_built: List[Callable[[], None]] = []

    def _set_dropout(self, rate: float) -> None:
        """TorchShim's, then the dropout on the attention probabilities: the
        fixed `attention_dropout` if there is one, else the caller's rate
        (also where a family keeps it as a float, not a Dropout module)."""
        super()._set_dropout(rate)
        self._set_attention_dropout(rate if self.attention_dropout is None else self.attention_dropout)

    def _set_attention_dropout(self, rate: float) -> int:
        """Give the attention probabilities' dropouts `rate`; how many there are."""
        found = 0
        for module in self._model.modules():
            if isinstance(getattr(module, FLOAT_ATTENTION_DROPOUT, None), float):
                setattr(module, FLOAT_ATTENTION_DROPOUT, rate)
                found += 1
            if type(module).__name__.endswith(SELF_ATTENTION_SUFFIX):
                for child in module.children():
                    if isinstance(child, torch.nn.Dropout):
                        child.p = rate
                        found += 1
        return found

    @property
    def built(self) -> bool:
        return self._model.transformer is not None

    def when_built(self, callback: Callable[[], None]) -> None:
        self._when_built.append(callback)
        if self.built:
            callback()

    def set_transformer(self, transformer: torch.nn.Module, tokenizer: Any, quantization: Optional[str] = None) -> None:
        """Put in an encoder and its tokenizer, on this shim's device."""
        device = self.device
        embeddings = transformer.get_input_embeddings()
        if isinstance(embeddings, torch.nn.Embedding):
            # A sparse gradient for the vocabulary-sized table, added into a
            # dense buffer kept across steps (TorchShim): its dense backward
            # allocated and zeroed a fresh table every group of windows, a
            # sixth of a training step.
            embeddings.sparse = True
        for module in transformer.modules():
            for attr in IDENTITY_DROPOUT_ATTRS:
                if isinstance(getattr(module, attr, None), torch.nn.Identity):
                    setattr(module, attr, torch.nn.Dropout(0.0))
        self._model.transformer = transformer.to(device)
        if self.attention_dropout is not None and not self._set_attention_dropout(self.attention_dropout):
            warnings.warn(
                f"attention_dropout = {self.attention_dropout} has no effect on this {type(transformer).__name__}: "
                f"no dropout on its attention probabilities was found (the caller's rate reaches its other dropouts)"
            )
        if device.type == "cpu" and autocast_dtype(self._model.precision, device) is not None:
            bound_onednn_kernel_cache()
        self.tokenizer = tokenizer
        self.quantization = quantization
        self.clear_caches()
        self._is_train = None
        self._dropout_rate = None
        self.builtin_learn_rate_multipliers = (
            layer_decay_multipliers(self._model, self.layer_decay) if self.layer_decay != 1.0 else {}
        )
        for callback in self._when_built:
            callback()

    def quantize_int8(self) -> None:
        """Store the encoder's linear layers as int8, for serving (see quantize.py)."""
        if not self.built:
            raise ValueError("The Hugging Face encoder has not been loaded yet: nothing to quantize")
        self.set_transformer(quantize_linears(self._model.transformer), self.tokenizer, INT8)

    def __call__(self, inputs: ArgsKwargs, is_train: bool):
        if is_train:
            return super().__call__(inputs, is_train)
        with torch.inference_mode():
            return super().__call__(inputs, is_train)

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state["_when_built"] = []  # they belong to the original's model
        return state

    # --------------------------------------------------------- serialization
    def to_bytes(self) -> bytes:
        if not self.built:
            raise ValueError(
                "The Hugging Face encoder has not been loaded yet: initialize the pipeline "
                "(nlp.initialize() or spacy train) before saving it"
            )
        transformer = self._model.transformer
        return srsly.msgpack_dumps(
            {
                "format": FORMAT,
                "config": transformer.config.to_json_string(),
                "tokenizer": tokenizer_files(self.tokenizer),
                "weights": module_to_bytes(self._model),
                "quantization": self.quantization,
            }
        )

    def from_bytes(self, data: bytes) -> "HFShim":
        self.read_bytes(data)()
        return self

    def read_bytes(self, data: Any, *, source: Optional[str] = None, allow_nonfinite: bool = False) -> Callable[[], None]:
        """Build the saved encoder and tokenizer (no network) and check its
        weights, without changing this shim; the returned step puts them in."""
        source = source or _anonymous_source(data)
        msg = read_msgpack(data, source)
        if not isinstance(msg, dict) or set(msg) != _KEYS or msg["format"] != FORMAT:
            found = sorted(map(str, msg)) if isinstance(msg, dict) else type(msg).__name__
            raise ModelLoadError(f"Could not read a Hugging Face encoder from {source}: not its saved format (found {found})")
        files = msg["tokenizer"]
        if not isinstance(msg["config"], str) or not isinstance(files, dict) or not all(
            isinstance(k, str) and "/" not in k and isinstance(v, bytes) for k, v in files.items()
        ):
            raise ModelLoadError(f"Could not read a Hugging Face encoder from {source}: its config or tokenizer files are corrupt")
        if msg["quantization"] not in (None, INT8):
            raise ModelLoadError(f"Could not read a Hugging Face encoder from {source}: unknown quantization {msg['quantization']!r}")
        transformer, tokenizer = build_from_files(msg["config"], files, source)
        if msg["quantization"] == INT8:
            quantize_linears(transformer)
        width = getattr(transformer.config, "hidden_size", None)
        if self.width is not None and width != self.width:
            raise ModelLoadError(
                f"Could not load the Hugging Face encoder from {source}: its hidden size is {width} but the model's width is {self.width}"
            )
        module = PooledEncoder(transformer)
        state = read_module_state(module, msg["weights"], source=source, allow_nonfinite=allow_nonfinite)

        def apply() -> None:
            apply_module_state(module, state, torch.device("cpu"))
            self.set_transformer(transformer, tokenizer, msg["quantization"])

        return apply


def tokenizer_files(tokenizer: Any) -> Dict[str, bytes]:
    """The files `save_pretrained` writes for `tokenizer`, by name."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {path.name: path.read_bytes() for path in sorted(Path(tmp).iterdir()) if path.is_file()}


def build_from_files(config_json: str, files: Dict[str, bytes], source: str):
    """A randomly initialised encoder of the saved config and the saved
    tokenizer, read from a temporary directory (never the hub)."""
    AutoConfig, AutoModel, AutoTokenizer = require_transformers("AutoConfig", "AutoModel", "AutoTokenizer")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        (Path(tmp) / "config.json").write_text(config_json, encoding="utf8")
        try:
            config = AutoConfig.from_pretrained(tmp, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
            with quiet():
                transformer = without_pooler(AutoModel.from_config(config))
        except Exception as err:  # transformers raises many kinds for bad files
            first = (str(err) or type(err).__name__).splitlines()[0]
            raise ModelLoadError(f"Could not build the saved Hugging Face encoder from {source}: {first}") from None
    return transformer, tokenizer


def require_transformers(*names: str):
    """transformers' classes by name, or one clear error if it is missing."""
    try:
        import transformers
    except ImportError:
        raise ImportError(
            "spacy-pytorch-shim.HFEncoder.v1 needs transformers: pip install 'spacy-pytorch-shim[transformers]'"
        ) from None
    return tuple(getattr(transformers, name) for name in names)


def without_pooler(transformer: torch.nn.Module) -> torch.nn.Module:
    """The encoder without its sentence pooler (BERT, RoBERTa, XLM-R...), as
    `add_pooling_layer=False` builds it: token vectors never use it, and an
    unused parameter would still be decayed in data-parallel training."""
    if isinstance(getattr(transformer, "pooler", None), torch.nn.Module):
        transformer.pooler = None
    return transformer


@contextlib.contextmanager
def quiet():
    """transformers' progress and init messages off while building."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()
