"""Overhead of spacy_pytorch_shim.TorchWrapper against plain PyTorch and
Thinc's PyTorchWrapper_v2, on one training step and on inference.

Two modules, 40 tokens per sequence, input a float32 array (batch, 40, 96);
the loss gradient dY is a fixed random array:
  bilstm      : a 2-layer bidirectional nn.LSTM (batch_first), 128 hidden,
                output (batch, 40, 256); 16 parameter tensors.
  transformer : nn.Linear(96, 256), then a 6-layer nn.TransformerEncoder
                (d_model 256, 4 heads, feed-forward 512, dropout 0, final
                LayerNorm); 76 parameter tensors, 3.2M parameters.

One training step, for every system:
  forward, backward with dY (input gradient dX included: Thinc's contract
  returns dX, so the plain loop asks for it too), Adam update
  (lr 0.001, b1 0.9, b2 0.999, eps 1e-8, no gradient clipping, no L2) and an
  EMA of the parameters with Thinc's decay schedule min((1+t)/(10+t), 0.9999).

  plain  : torch only; torch.optim.Adam(foreach=True), EMA with
           torch._foreach_lerp_, zero_grad(set_to_none=True).
  ours   : spacy_pytorch_shim.TorchWrapper + thinc.api.Adam(0.001,
           grad_clip=0.0, L2=0.0) (averages kept: use_averages=True).
  thinc  : thinc.api.PyTorchWrapper_v2 + the same kind of Thinc optimizer.
  frozen : ours with the encoder frozen (ParamGroups.v1): the LSTM's first
           layer, or every transformer layer; only the rest is trained.

Thinc's Adam clips gradients by norm (grad_clip=1.0) by default; clipping is
switched off here, in both Thinc systems, for a like-for-like comparison with
the plain loop (which does no clipping). L2 is 0.0 by default in Thinc.

Inference: plain `torch.no_grad()` forward in eval mode plus conversion of
the output to numpy (on CUDA the plain output stays a tensor), `model.predict`
for the Thinc systems (which return numpy / cupy arrays).

Runs are interleaved in one process: a warm-up, then for every repetition each
system does one step, in a shuffled order; medians are reported.

    python bench/shim_overhead.py [--quick] [--out FILE.md] [--device cpu|cuda]
        [--threads N] [--reps N] [--batches 8,32,128] [--models bilstm,transformer]

torch threads are set once, for all systems (default: os.cpu_count()); on a
shared or busy machine `--threads 1` gives far steadier numbers.
Results and the commands used are in docs/shim-overhead.md.
"""
import argparse
import os
import platform
import random
import statistics
import sys
import time
from typing import Callable, Dict, List

import numpy
import torch

# Runnable from a checkout without installing the package.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

N_TOKENS = 40
N_IN = 96
N_HIDDEN = 128
BATCH_SIZES = (8, 32, 128)
SYSTEMS = ("plain", "ours", "thinc", "frozen")
D_MODEL = 256
# The limits the report checks: ours/plain for a training step and for inference.
TRAIN_LIMIT, PREDICT_LIMIT = 1.03, 1.02


class BiLSTM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(
            N_IN, N_HIDDEN, num_layers=2, bidirectional=True, batch_first=True
        )

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.lstm(X)[0]


class Transformer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(N_IN, D_MODEL)
        layer = torch.nn.TransformerEncoderLayer(D_MODEL, 4, 512, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(
            layer, 6, norm=torch.nn.LayerNorm(D_MODEL), enable_nested_tensor=False
        )

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.proj(X))


# model name -> (module class, width of its output, frozen parameter patterns)
MODELS = {
    "bilstm": (BiLSTM, 2 * N_HIDDEN, ["torch.lstm.*_l0", "torch.lstm.*_l0_reverse"]),
    "transformer": (Transformer, D_MODEL, ["torch.encoder.layers.*"]),
}


def ema_decay(t: int) -> float:
    """Thinc's ops.update_averages schedule."""
    return min((1.0 + t) / (10.0 + t), 0.9999)


def make_systems(model_name: str, device: str, seed: int) -> Dict[str, Dict[str, Callable]]:
    from thinc.api import Adam, PyTorchWrapper_v2

    from spacy_pytorch_shim import TorchWrapper
    from spacy_pytorch_shim.models.param_groups import with_param_groups

    module_class, _, frozen_patterns = MODELS[model_name]
    torch.manual_seed(seed)
    template = module_class()
    state = {k: v.clone() for k, v in template.state_dict().items()}

    def fresh() -> torch.nn.Module:
        module = module_class()
        module.load_state_dict(state)
        return module.to(device)

    def thinc_optimizer():
        return Adam(0.001, beta1=0.9, beta2=0.999, eps=1e-8, grad_clip=0.0, L2=0.0)

    # ---- plain PyTorch
    plain = fresh()
    params = [p for p in plain.parameters()]
    torch_opt = torch.optim.Adam(params, lr=0.001, betas=(0.9, 0.999), eps=1e-8, foreach=True)
    averages = [torch.zeros_like(p) for p in params]
    plain_step = [0]

    def plain_train(X, dY):
        if not plain.training:  # the wrappers switch modes the same way
            plain.train()
        Xt = torch.as_tensor(X, device=device).requires_grad_()
        Y = plain(Xt)
        Y.backward(dY["torch"])
        dX = Xt.grad
        torch_opt.step()
        torch_opt.zero_grad(set_to_none=True)
        plain_step[0] += 1
        with torch.no_grad():
            torch._foreach_lerp_(averages, params, 1.0 - ema_decay(plain_step[0]))
        return dX

    def plain_predict(X):
        if plain.training:
            plain.eval()
        with torch.no_grad():
            Y = plain(torch.as_tensor(X, device=device))
        return Y.numpy() if Y.device.type == "cpu" else Y

    ours = TorchWrapper(fresh(), device=torch.device(device))
    thinc_model = PyTorchWrapper_v2(fresh())
    frozen = with_param_groups(TorchWrapper(fresh(), device=torch.device(device)), frozen=frozen_patterns)
    return {
        "plain": {"train": plain_train, "predict": plain_predict},
        "ours": {"train": thinc_train_step(ours, thinc_optimizer()), "predict": ours.predict},
        "thinc": {"train": thinc_train_step(thinc_model, thinc_optimizer()), "predict": thinc_model.predict},
        "frozen": {"train": thinc_train_step(frozen, thinc_optimizer()), "predict": frozen.predict},
    }


def thinc_train_step(model, optimizer):
    """One Thinc training step (forward, backward, update, schedules) of a
    wrapped model: the same for our TorchWrapper and Thinc's PyTorchWrapper_v2."""

    def train(X, dY):
        Y, backprop = model.begin_update(X)
        dX = backprop(dY["xp"])
        model.finish_update(optimizer)
        optimizer.step_schedules()
        return dX

    return train


def bench(model_name: str, device: str, reps: int, warmup: int, seed: int, batch_sizes=BATCH_SIZES) -> Dict:
    from thinc.api import get_current_ops

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    xp = get_current_ops().xp
    rng = numpy.random.default_rng(seed)
    systems = make_systems(model_name, device, seed)
    n_out = MODELS[model_name][1]
    order = list(SYSTEMS)
    shuffler = random.Random(seed)
    results: Dict = {}
    for batch in batch_sizes:
        X = xp.asarray(rng.standard_normal((batch, N_TOKENS, N_IN), dtype="float32"))
        dY_np = rng.standard_normal((batch, N_TOKENS, n_out), dtype="float32")
        dY = {"xp": xp.asarray(dY_np), "torch": torch.as_tensor(dY_np, device=device)}
        for task in ("train", "predict"):
            args = (X, dY) if task == "train" else (X,)
            times: Dict[str, List[float]] = {name: [] for name in SYSTEMS}
            for i in range(warmup + reps):
                shuffler.shuffle(order)
                for name in order:
                    fn = systems[name][task]
                    sync()
                    start = time.perf_counter()
                    fn(*args)
                    sync()
                    elapsed = time.perf_counter() - start
                    if i >= warmup:
                        times[name].append(elapsed * 1000.0)
            results[(batch, task)] = {k: statistics.median(v) for k, v in times.items()}
            print(
                f"{model_name} batch {batch:4d} {task:8s} "
                + "  ".join(f"{k} {v:8.2f} ms" for k, v in results[(batch, task)].items()),
                file=sys.stderr,
                flush=True,
            )
    return results


def table(results: Dict, header: str, batch_sizes=BATCH_SIZES) -> str:
    lines = [header, ""]
    lines.append(
        "| batch | task | plain ms | ours ms | thinc ms | frozen ms | ours/plain | thinc/plain | ours/thinc | frozen/ours |"
    )
    lines.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for batch in batch_sizes:
        for task in ("train", "predict"):
            r = results[(batch, task)]
            lines.append(
                f"| {batch} | {task} | {r['plain']:.2f} | {r['ours']:.2f} | {r['thinc']:.2f} | {r['frozen']:.2f} "
                f"| {r['ours'] / r['plain']:.3f} | {r['thinc'] / r['plain']:.3f} "
                f"| {r['ours'] / r['thinc']:.3f} | {r['frozen'] / r['ours']:.3f} |"
            )
    lines.append("")
    lines.append(
        f"Targets: ours/plain <= {TRAIN_LIMIT} (train), <= {PREDICT_LIMIT} (predict); "
        "ours/thinc <= 1.00; frozen/ours < 1 (train)."
    )
    for batch in batch_sizes:
        for task, limit in (("train", TRAIN_LIMIT), ("predict", PREDICT_LIMIT)):
            r = results[(batch, task)]
            vs_plain = r["ours"] / r["plain"]
            vs_thinc = r["ours"] / r["thinc"]
            line = (
                f"- batch {batch} {task}: ours/plain {vs_plain:.3f} "
                f"({'met' if vs_plain <= limit else 'MISSED'}, <= {limit}), "
                f"ours/thinc {vs_thinc:.3f} ({'met' if vs_thinc <= 1.0 else 'MISSED'}, <= 1.00)"
            )
            if task == "train":
                vs_ours = r["frozen"] / r["ours"]
                line += f", frozen/ours {vs_ours:.3f} ({'met' if vs_ours < 1.0 else 'MISSED'}, < 1)"
            lines.append(line)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per cell")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for all systems (default: os.cpu_count())")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batches", default=",".join(map(str, BATCH_SIZES)),
                        help="comma-separated batch sizes (default: 8,32,128)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated models (default: bilstm,transformer)")
    args = parser.parse_args()

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    if args.device == "cuda":
        from thinc.api import require_gpu

        require_gpu()
    reps = args.reps or (5 if args.quick else 60)
    warmup = 2 if args.quick else 10

    import thinc

    batch_sizes = tuple(int(b) for b in args.batches.split(","))
    texts = []
    for model_name in args.models.split(","):
        # The transformer's steps take seconds at batch 128: fewer repetitions.
        model_reps = reps if model_name == "bilstm" or args.reps else max(5, reps // 4)
        model_warmup = warmup if model_name == "bilstm" else max(2, warmup // 3)
        header = (
            f"### {model_name}, {args.device}, torch threads {torch.get_num_threads()}\n\n"
            f"{MODEL_DESCRIPTIONS[model_name]}, {N_TOKENS} tokens per sequence; "
            f"median ms of {model_reps} interleaved repetitions after {model_warmup} warm-ups"
            f"{' (--quick)' if args.quick else ''}.\n"
            f"Adam lr 0.001 b1 0.9 b2 0.999 eps 1e-8, no grad clipping (Thinc's default "
            f"grad_clip=1.0 switched off), L2 0, EMA of the parameters in every system; "
            f"dX computed by every system.\n"
            f"torch {torch.__version__}, thinc {thinc.__version__}, numpy {numpy.__version__}, "
            f"python {platform.python_version()}"
            + (f", GPU {torch.cuda.get_device_name()}" if args.device == "cuda" else "")
            + "."
        )
        results = bench(model_name, args.device, model_reps, model_warmup, args.seed, batch_sizes)
        texts.append(table(results, header, batch_sizes))
        print(texts[-1], flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf8") as file_:
            file_.write("\n".join(texts))


MODEL_DESCRIPTIONS = {
    "bilstm": "2-layer bidirectional LSTM (96 -> 2x128), 16 parameter tensors",
    "transformer": "Linear 96 -> 256 + 6-layer TransformerEncoder (d_model 256, 4 heads, "
    "feed-forward 512, final LayerNorm), 76 parameter tensors",
}


if __name__ == "__main__":
    main()
