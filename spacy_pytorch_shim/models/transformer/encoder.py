"""A Hugging Face encoder as a token-to-vector layer: List[Doc] -> one
vector per spaCy token (List[Floats2d]), for our heads, spaCy's components
and spaCy's tok2vec listeners."""
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy
import torch
from spacy.tokens import Doc
from thinc.api import ArgsKwargs, Model, torch2xp, xp2torch
from thinc.types import Floats2d

from ..checks import check_size
from ..torch_wrapper import forward as torch_wrapper_forward
from .alignment import POOLINGS, align_pieces, pool_weights
from .module import PRECISIONS, PooledEncoder
from .shim import HFShim, quiet, require_transformers, without_pooler
from .windows import best_windows, group_windows, plan_windows

ARCH = "spacy-pytorch-shim.HFEncoder.v1"
ARCH_V2 = "spacy-pytorch-shim.HFEncoder.v2"
# Model types whose position ids start after the padding id (RoBERTa's scheme).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert")


def build_hf_encoder(
    *,
    name: str,
    width: int,
    pooling: str = "mean",
    window: Optional[int] = None,
    stride: Optional[int] = None,
    max_pieces: int = 4096,
    mixed_precision: str = "float32",
    gradient_checkpointing: bool = False,
    layer_decay: float = 1.0,
) -> Model[List[Doc], List[Floats2d]]:
    """"spacy-pytorch-shim.HFEncoder.v1": the encoder `name` (a hub name or a
    local directory, read by `from_pretrained` at initialization, never when
    a saved pipeline is loaded) with its fast tokenizer. `width` is its
    hidden size (heads are sized from it before the encoder is read; a
    mismatch is an error at initialization). Each token's vector pools the
    pieces overlapping its characters (`pooling`: mean, first or last).
    Documents longer than `window` pieces (default: the encoder's limit) run
    in windows every `stride` pieces (default 3/4 of the window), each token
    taking its vector from the window where it has the most context; windows
    run in batches of at most `max_pieces` padded pieces. `mixed_precision`:
    float16 (GPU only, with loss scaling), bfloat16 (GPU or CPU), or auto
    (bfloat16 where the hardware computes it natively, else float32).
    `layer_decay` < 1 scales each layer's learn rate by that much more than
    the layer above (the embeddings lowest). The caller's dropout rate
    reaches every dropout of the encoder."""
    return _build_hf_encoder(
        ARCH, name=name, width=width, pooling=pooling, window=window, stride=stride, max_pieces=max_pieces,
        mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing, layer_decay=layer_decay,
        attention_dropout=None,
    )


def build_hf_encoder_v2(
    *,
    name: str,
    width: int,
    pooling: str = "mean",
    window: Optional[int] = None,
    stride: Optional[int] = None,
    max_pieces: int = 4096,
    mixed_precision: str = "float32",
    gradient_checkpointing: bool = False,
    layer_decay: float = 1.0,
    attention_dropout: Optional[float] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """"spacy-pytorch-shim.HFEncoder.v2": v1 with `attention_dropout`, a fixed
    rate for the dropout on the attention probabilities (null: the caller's
    rate, as v1). At 0, PyTorch's fused attention kernel can run on the CPU
    (it has no dropout; with dropout attention takes the unfused path, which
    holds every window's full attention matrix for the backward pass)."""
    return _build_hf_encoder(
        ARCH_V2, name=name, width=width, pooling=pooling, window=window, stride=stride, max_pieces=max_pieces,
        mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing, layer_decay=layer_decay,
        attention_dropout=attention_dropout,
    )


def _build_hf_encoder(
    arch: str,
    *,
    name: str,
    width: int,
    pooling: str,
    window: Optional[int],
    stride: Optional[int],
    max_pieces: int,
    mixed_precision: str,
    gradient_checkpointing: bool,
    layer_decay: float,
    attention_dropout: Optional[float],
) -> Model[List[Doc], List[Floats2d]]:
    check_size(arch, "width", width)
    check_size(arch, "max_pieces", max_pieces)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{arch}: `name` must be a model name or directory, got {name!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"{arch}: `pooling` must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"{arch}: `mixed_precision` must be one of {', '.join(PRECISIONS)}, got {mixed_precision!r}")
    if isinstance(layer_decay, bool) or not isinstance(layer_decay, (int, float)) or not 0 < layer_decay <= 1:
        raise ValueError(f"{arch}: `layer_decay` must be a number in (0, 1], got {layer_decay!r}")
    if attention_dropout is not None and (
        isinstance(attention_dropout, bool) or not isinstance(attention_dropout, (int, float)) or not 0 <= attention_dropout < 1
    ):
        raise ValueError(f"{arch}: `attention_dropout` must be null or a number in [0, 1), got {attention_dropout!r}")
    if window is not None:
        check_size(arch, "window", window, minimum=2)
    if stride is not None:
        check_size(arch, "stride", stride)
        if window is not None and stride >= window:
            raise ValueError(f"{arch}: `stride` ({stride}) must be less than `window` ({window}) for windows to overlap")
    shim = HFShim(
        PooledEncoder(precision=mixed_precision),
        width=width,
        mixed_precision=mixed_precision == "float16",
        layer_decay=float(layer_decay),
        attention_dropout=None if attention_dropout is None else float(attention_dropout),
    )
    return Model(
        "hf_encoder",
        torch_wrapper_forward,
        init=init,
        shims=[shim],
        dims={"nO": width},
        attrs={
            "convert_inputs": convert_docs,
            "convert_outputs": convert_token_vectors,
            "dropout_rate": None,
            "output_dropout": False,
            "arch": arch,
            "hf_name": name,
            "pooling": pooling,
            "window": window,
            "stride": stride,
            "max_pieces": max_pieces,
            "gradient_checkpointing": gradient_checkpointing,
        },
    )


def init(model: Model, X: Any = None, Y: Any = None) -> None:
    """Read the encoder and its tokenizer with `from_pretrained`, once."""
    shim: HFShim = model.shims[0]
    if not shim.built:
        transformer, tokenizer = load_pretrained(model.attrs["arch"], model.attrs["hf_name"])
        check_encoder(model, transformer, tokenizer)
        if model.attrs["gradient_checkpointing"]:
            enable_checkpointing(transformer)
        shim.set_transformer(transformer, tokenizer)


def enable_checkpointing(transformer: torch.nn.Module) -> None:
    """Activation checkpointing under its transformers 5 name (the old one
    goes in 6), non-reentrant (gradients reach the frozen embeddings' users)."""
    kwargs = {"use_reentrant": False}
    transformer.config.use_cache = False
    if hasattr(transformer, "activation_checkpointing_enable"):
        transformer.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        transformer.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def load_pretrained(arch: str, name: str) -> Tuple[torch.nn.Module, Any]:
    AutoModel, AutoTokenizer = require_transformers("AutoModel", "AutoTokenizer")

    try:
        with quiet():
            tokenizer = AutoTokenizer.from_pretrained(name)
            transformer = without_pooler(AutoModel.from_pretrained(name))
    except Exception as err:  # OSError, ValueError, HTTP errors ... all mean the same here
        first = (str(err) or type(err).__name__).strip().splitlines()[0]
        raise ValueError(f"{arch}: `name` {name!r} could not be loaded with from_pretrained: {first}") from None
    return transformer, tokenizer


def check_encoder(model: Model, transformer: torch.nn.Module, tokenizer: Any) -> None:
    """The settings that need the encoder: its width, a fast tokenizer, the window."""
    arch, name = model.attrs["arch"], model.attrs["hf_name"]
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{arch}: `name` {name!r} has no fast tokenizer ({type(tokenizer).__name__}); "
            f"token alignment needs the character offsets only fast tokenizers give"
        )
    hidden = getattr(transformer.config, "hidden_size", None)
    if hidden != model.get_dim("nO"):
        raise ValueError(f"{arch}: `width` is {model.get_dim('nO')} but {name!r} has hidden size {hidden}; set width = {hidden}")
    window = model.attrs["window"]
    limit = piece_limit(transformer, tokenizer)
    if window is not None and window > limit:
        raise ValueError(f"{arch}: `window` ({window}) is more than {name!r} takes ({limit} pieces besides its special tokens)")
    stride = model.attrs["stride"]
    if window is None and stride is not None and stride >= limit:
        raise ValueError(f"{arch}: `stride` ({stride}) must be less than the window, {name!r}'s limit of {limit} pieces")


def piece_limit(transformer: torch.nn.Module, tokenizer: Any) -> int:
    """How many pieces one window may hold besides the special tokens."""
    config = transformer.config
    limit = getattr(config, "max_position_embeddings", None) or 512
    if config.model_type in _OFFSET_POSITIONS:
        limit -= (config.pad_token_id or 0) + 1
    if 0 < getattr(tokenizer, "model_max_length", 0) < limit:
        limit = tokenizer.model_max_length
    return limit - tokenizer.num_special_tokens_to_add(pair=False)


def special_ids(tokenizer: Any) -> Tuple[List[int], List[int]]:
    """The special ids the tokenizer puts before and after a text's pieces."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i], full[i + len(plain) :]
    raise ValueError("The Hugging Face encoder's tokenizer: cannot find where it puts its special tokens")


def convert_docs(model: Model, docs: List[Doc], is_train: bool) -> Tuple[ArgsKwargs, Callable]:
    """Docs -> the PooledEncoder's arguments: tokenise each text with offsets,
    align pieces to tokens, cut windows, group them by padded pieces."""
    shim: HFShim = model.shims[0]
    if not shim.built:
        raise ValueError(f"{model.attrs['arch']}: the encoder {model.attrs['hf_name']!r} is not loaded: initialize the pipeline first")
    tokenizer = shim.tokenizer
    window = model.attrs["window"] or piece_limit(shim.module.transformer, tokenizer)
    stride = model.attrs["stride"] or max(1, window * 3 // 4)
    before, after = special_ids(tokenizer)
    encoded: Dict[str, list] = {"input_ids": [], "offset_mapping": []}
    if docs:
        with quiet():
            encoded = tokenizer([doc.text for doc in docs], add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    windows: List[List[int]] = []
    pairs: List[Tuple[numpy.ndarray, ...]] = []  # per doc: token row, window, piece in window, weight
    n_tokens = 0
    for doc, ids, offsets in zip(docs, encoded["input_ids"], encoded["offset_mapping"]):
        spans, tokens, chosen, positions, weights = plan_doc(doc, ids, offsets, window, stride, model.attrs["pooling"])
        pairs.append((tokens + n_tokens, chosen + len(windows), positions, weights))
        windows.extend(before + ids[s:e] + after for s, e in spans)
        n_tokens += len(doc)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = shim.device
    groups, window_row = pad_groups(windows, model.attrs["max_pieces"], pad_id, len(before))
    empty = (numpy.zeros(0, dtype="i8"),) * 4
    tokens, chosen, positions, weights = (numpy.concatenate(column) for column in zip(*pairs)) if pairs else empty
    args = (
        [(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)) for ids, mask in groups],
        torch.from_numpy((window_row[chosen] + positions).astype("i8")).to(device),
        torch.from_numpy(tokens.astype("i8")).to(device),
        torch.from_numpy(weights.astype("f")).to(device),
        n_tokens,
    )
    return ArgsKwargs(args=args, kwargs={}), lambda _: []


def plan_doc(doc: Doc, ids: List[int], offsets: List[Tuple[int, int]], window: int, stride: int, pooling: str):
    """One doc's windows and, per (token, piece) pair that pools, the token,
    the window it takes the piece from, the piece's place there and its weight."""
    tokens, pieces = align_pieces(doc, offsets)
    weights = pool_weights(tokens, pooling)
    keep = weights > 0
    tokens, pieces, weights = tokens[keep], pieces[keep], weights[keep]
    spans = plan_windows(len(ids), window, stride)
    first = numpy.full(len(doc), numpy.iinfo("i").max, dtype="i")
    last = numpy.full(len(doc), -1, dtype="i")
    numpy.minimum.at(first, tokens, pieces)
    numpy.maximum.at(last, tokens, pieces)
    chosen = best_windows(first, last, spans, len(ids))[tokens]
    lost = chosen < 0  # a token longer than the windows' overlap: each piece from its own best window
    if lost.any():
        chosen[lost] = best_windows(pieces[lost], pieces[lost], spans, len(ids))
    starts = numpy.array([start for start, _ in spans] or [0], dtype="i")
    return spans, tokens, chosen, pieces - starts[chosen], weights


def pad_groups(windows: List[List[int]], max_pieces: int, pad_id: int, n_before: int):
    """The windows padded in groups (ids, attention mask), and the row where
    each window's first piece lands in the groups' flattened outputs."""
    window_row = numpy.zeros(len(windows), dtype="i8")
    groups = []
    row = 0
    for group in group_windows([len(w) for w in windows], max_pieces):
        length = max(len(windows[i]) for i in group)
        ids = numpy.full((len(group), length), pad_id, dtype="i8")
        mask = numpy.zeros((len(group), length), dtype="i8")
        for r, i in enumerate(group):
            ids[r, : len(windows[i])] = windows[i]
            mask[r, : len(windows[i])] = 1
            window_row[i] = row + r * length + n_before
        row += len(group) * length
        groups.append((ids, mask))
    return groups, window_row


def convert_token_vectors(model: Model, X_Ytorch: Tuple[List[Doc], torch.Tensor], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    """One (n_tokens, width) tensor -> one array per doc; the gradient back."""
    docs, Ytorch = X_Ytorch
    Y = torch2xp(Ytorch.detach(), ops=model.ops)
    lengths = [len(doc) for doc in docs]
    outputs = model.ops.unflatten(Y, model.ops.asarray1i(lengths)) if docs else []

    def backprop(dY: List[Floats2d]) -> ArgsKwargs:
        grads = model.ops.flatten(dY) if dY else model.ops.alloc2f(0, Ytorch.shape[1])
        dYtorch = xp2torch(grads, device=Ytorch.device)
        return ArgsKwargs(args=(Ytorch,), kwargs={"grad_tensors": (dYtorch,)})

    return outputs, backprop
