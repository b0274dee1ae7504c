"""Config-driven experiments: `spacy train` over a grid of config settings.

    python bench/grid.py --config configs/ner.cfg --data data/btc-sample \
        --out bench/results/grid \
        [--grid 'components.torch_ner.model.tok2vec.encoder=cnn,bilstm;components.torch_ner.model.tok2vec.width=64,96;training.dropout=0.1,0.2'] \
        [--epochs 2]

For every combination of the grid's values this trains with the real CLI
(`python -m spacy train`, in a subprocess), evaluates `model-best` on the
test split (`python -m spacy evaluate`), measures inference speed (words per
second of `nlp.pipe` over the test texts, in a fresh subprocess: the
harness's `predict` worker of bench/workers.py), and writes to --out:

    results.md    markdown table: run, settings, test score, dev score, train time, words/s
    results.png   the same as two bar charts (score, words/s)
    results.json  everything measured
    configs/      the config of every run
    runs/<run>/   train.log, eval.json, speed.json and the pipelines

Grid syntax: `key=v1,v2;key2=v1,v2` with config paths as in spaCy's
`--key value` overrides. Values are parsed like spaCy parses overrides
(numbers, true/false, JSON). A key that ends in `.encoder` with the values
`cnn` / `bilstm` replaces the whole encoder block (which no override can do):
each run then gets a config of its own with
`spacy-pytorch-shim.CNNEncoder.v2` or `spacy-pytorch-shim.BiLSTMEncoder.v2`,
whose `width` refers to the enclosing tok2vec's `width`, so the two always
agree. The default grid is encoder {cnn, bilstm} x tok2vec width {64, 96} x
training.dropout {0.1, 0.2} for the first torch tok2vec in the config.

Children run with one torch thread (--threads) so runs are comparable on a
shared machine.
"""
import argparse
import itertools
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from runner import child_env, qjoin, run_cmd, run_worker, tail

ENCODERS = {
    "cnn": {"@architectures": "spacy-pytorch-shim.CNNEncoder.v2", "depth": 4, "window": 1},
    "bilstm": {"@architectures": "spacy-pytorch-shim.BiLSTMEncoder.v2", "depth": 1},
}
TOK2VEC_PREFIX = "spacy-pytorch-shim.TorchTok2Vec."  # any version

def log(msg: str) -> None:
    print(f"[grid {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------- config
def load_config(path: Path):
    from thinc.api import Config

    return Config().from_disk(path, interpolate=False)


def get_path(config: Dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def set_path(config: Dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = get_path(config, ".".join(parts[:-1])) if len(parts) > 1 else config
    node[parts[-1]] = value


def find_blocks(config: Dict[str, Any], match: Callable[[Dict[str, Any]], bool]) -> List[str]:
    """Dotted paths of every block under [components] that `match`es."""
    found = []

    def walk(node: Any, path: List[str]) -> None:
        if isinstance(node, dict):
            if match(node):
                found.append(".".join(path))
            for key, value in node.items():
                walk(value, path + [key])

    walk(config.get("components", {}), ["components"])
    return found


def find_tok2vecs(config: Dict[str, Any]) -> List[str]:
    """Dotted paths of every torch tok2vec block (one with an encoder)."""
    return find_blocks(config, lambda node: str(node.get("@architectures")).startswith(TOK2VEC_PREFIX) and isinstance(node.get("encoder"), dict))


def default_grid(config) -> str:
    tok2vecs = find_tok2vecs(config)
    if not tok2vecs:
        raise SystemExit("no spacy-pytorch-shim.TorchTok2Vec block in the config: pass --grid")
    t = tok2vecs[0]
    return f"{t}.encoder=cnn,bilstm;{t}.width=64,96;training.dropout=0.1,0.2"


def parse_value(text: str) -> Any:
    """Like spaCy's override parsing: JSON if it parses, else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_grid(spec: str) -> List[Tuple[str, List[str]]]:
    axes = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        if "=" not in part:
            raise SystemExit(f"bad grid axis {part!r}: expected key=v1,v2")
        key, values = part.split("=", 1)
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise SystemExit(f"grid axis {key!r} has no values")
        axes.append((key.strip(), vals))
    keys = [k for k, _ in axes]
    if len(set(keys)) != len(keys):
        raise SystemExit(f"a key appears twice in the grid: {keys}")
    return axes


def is_encoder_key(key: str) -> bool:
    return key.endswith(".encoder")


def encoder_block(kind: str, tok2vec_path: str, original: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    if kind not in ENCODERS:
        raise SystemExit(f"unknown encoder {kind!r}: use one of {', '.join(ENCODERS)}")
    block = dict(ENCODERS[kind])
    # Keep the config's own settings when it already uses this encoder.
    if original and original.get("@architectures") == block["@architectures"]:
        block.update({k: v for k, v in original.items() if k != "width"})
    block["width"] = "${" + tok2vec_path + ".width}"
    return block


def run_config(base, base_path: Path, setting: Dict[str, str], dest: Path) -> Tuple[Path, List[str]]:
    """The config file and the CLI overrides for one combination."""
    import copy

    config = copy.deepcopy(base)
    overrides: List[str] = []
    for key, value in setting.items():
        if is_encoder_key(key):
            tok2vec_path = key[: -len(".encoder")]
            original = get_path(config, key)
            config_node = get_path(config, tok2vec_path)
            config_node["encoder"] = encoder_block(value, tok2vec_path, original)
        else:
            get_path(config, key)  # fail early on a typo
            overrides += [f"--{key}", value]
    # The encoder block(s) are the only change to the file itself.
    config.to_disk(dest)
    return dest, overrides


def check_widths(config_path: Path, overrides: List[str]) -> None:
    """Every torch tok2vec's encoder width equals its own width."""
    from spacy.cli._util import parse_config_overrides
    from spacy.util import load_config

    parsed = parse_config_overrides(list(overrides))  # it consumes the list
    config = load_config(config_path, overrides=parsed, interpolate=True)
    for path in find_tok2vecs(config):
        tok2vec = get_path(config, path)
        if tok2vec["encoder"].get("width") != tok2vec.get("width"):
            raise SystemExit(
                f"{config_path}: {path}.encoder.width = {tok2vec['encoder'].get('width')} "
                f"but {path}.width = {tok2vec.get('width')}"
            )


# ---------------------------------------------------------------- children
def run_logged(cmd: Sequence[Any], log_path: Path, env: Dict[str, str]) -> float:
    """Seconds the command took; raises with the tail of its log if it failed."""
    result = run_cmd(cmd, log_path, env=env)
    if result["rc"] != 0:
        raise RuntimeError(f"exit {result['rc']}: {qjoin(cmd)}\n{tail(log_path, 25)}")
    return result["wall_s"]


def main_score_key(config) -> str:
    weights = config["training"].get("score_weights", {})
    scored = [(w, k) for k, w in weights.items() if isinstance(w, (int, float)) and w]
    if not scored:
        raise SystemExit("the config has no non-zero [training.score_weights]")
    return max(scored)[1]


def run_one(run_id: str, setting: Dict[str, str], args, base, data: Path, out: Path, score_key: str) -> Dict[str, Any]:
    run_dir = out / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path, overrides = run_config(base, Path(args.config), setting, out / "configs" / f"{run_id}.cfg")
    check_widths(config_path, overrides)
    env = dict(child_env(args.threads), PYTHONUNBUFFERED="1")
    train_cmd = [
        sys.executable, "-m", "spacy", "train", config_path,
        "--output", run_dir / "train",
        "--paths.train", data / "train.spacy",
        "--paths.dev", data / "dev.spacy",
        "--training.max_epochs", str(args.epochs),
        "--training.max_steps", "0",
        "--training.eval_frequency", str(args.eval_frequency),
        *overrides,
    ]
    if args.train_limit:
        train_cmd += ["--corpora.train.limit", str(args.train_limit)]
    train_s = run_logged(train_cmd, run_dir / "train.log", env)
    best = run_dir / "train" / "model-best"
    meta = json.loads((best / "meta.json").read_text(encoding="utf8"))
    run_logged(
        [sys.executable, "-m", "spacy", "evaluate", best, data / "test.spacy", "--output", run_dir / "eval.json"],
        run_dir / "eval.log", env,
    )
    scores = json.loads((run_dir / "eval.json").read_text(encoding="utf8"))
    speed = run_worker(
        "predict",
        {"model": str(best.resolve()), "test": str((data / "test.spacy").resolve()), "batch_size": 256,
         "runs": args.speed_reps, "task": None},  # no task: no accuracy
        run_dir / "speed.log", env,
    )
    speed.pop("_proc")
    return {
        "run": run_id,
        "setting": setting,
        "config": str(config_path),
        "overrides": overrides,
        "test_score": scores.get(score_key),
        "dev_score": (meta.get("performance") or {}).get(score_key),
        "test_scores": {k: v for k, v in scores.items() if not isinstance(v, dict)},
        "train_s": train_s,
        "wps": speed["wps"],
        "speed": speed,
        "pipeline": str(best),
    }


# ----------------------------------------------------------------- reports
def short(key: str) -> str:
    return key.split(".")[-1] if key.split(".")[-1] not in ("width", "dropout", "depth") else ".".join(key.split(".")[-2:])


def label(setting: Dict[str, str]) -> str:
    return " ".join(f"{short(k)}={v}" for k, v in setting.items())


def fmt(value: Optional[float], scale: float = 100.0, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def write_markdown(path: Path, results: List[Dict[str, Any]], failures: List[Dict[str, Any]], args, score_key: str, axes) -> None:
    lines = [
        f"# Grid: {args.config} on {args.data}",
        "",
        f"{len(results)} runs; {args.epochs} epoch(s) each"
        + (f" on the first {args.train_limit} training docs" if args.train_limit else "")
        + f"; evaluation on dev every {args.eval_frequency} steps; `model-best` scored on `test.spacy`.",
        f"Score: `{score_key}` (x100). Train time: wall-clock seconds of `spacy train`. "
        f"Words/s: `nlp.pipe` over the test texts after a warm-up, median of {args.speed_reps} timed runs "
        "(bench/workers.py predict), "
        f"{args.threads} torch thread(s).",
        "",
        "Grid: " + "; ".join(f"`{k}` = {', '.join(v)}" for k, v in axes)
        + ". Settings below use the last part of each key.",
        "",
        f"| run (runs/…) | settings | test {score_key} | dev {score_key} | train time (s) | words/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    best = max((r["test_score"] or 0.0) for r in results) if results else None
    for r in results:
        score = fmt(r["test_score"])
        if best is not None and r["test_score"] == best:
            score = f"**{score}**"
        settings = ", ".join(f"`{short(k)}={v}`" for k, v in r["setting"].items())
        lines.append(
            f"| {r['run'].split('_')[0]} | {settings} | {score} | {fmt(r['dev_score'])} | {r['train_s']:.0f} | {r['wps']:,.0f} |"
        )
    if failures:
        lines += ["", "## Failed runs", ""]
        for f in failures:
            lines.append(f"* {f['run']} ({label(f['setting'])}): {f['error'].splitlines()[0]}")
    lines += ["", "![results](results.png)", ""]
    path.write_text("\n".join(lines), encoding="utf8")


def write_plot(path: Path, results: List[Dict[str, Any]], score_key: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{r['run'].split('_')[0]}: {label(r['setting'])}" for r in results]
    scores = [100 * (r["test_score"] or 0.0) for r in results]
    wps = [r["wps"] for r in results]
    height = max(2.5, 0.45 * len(results) + 1.2)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, height), sharey=True)
    y = list(range(len(results)))
    ax1.barh(y, scores, color="tab:blue")
    ax1.set_xlabel(f"test {score_key} (x100)")
    ax1.set_yticks(y)
    ax1.set_yticklabels(names, fontsize=8)
    ax1.invert_yaxis()
    for i, s in enumerate(scores):
        ax1.text(s, i, f" {s:.1f}", va="center", fontsize=8)
    ax2.barh(y, wps, color="tab:orange")
    ax2.set_xlabel("inference words/s")
    for i, w in enumerate(wps):
        ax2.text(w, i, f" {w:,.0f}", va="center", fontsize=8)
    ax1.set_xlim(0, max(scores + [1.0]) * 1.15)
    ax2.set_xlim(0, max(wps + [1.0]) * 1.2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the base config (e.g. configs/ner.cfg)")
    parser.add_argument("--data", required=True, help="directory with train.spacy, dev.spacy and test.spacy")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--grid", default=None, help="'key=v1,v2;key2=v1,v2' (default: encoder x width x dropout)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per run (default 2)")
    parser.add_argument("--eval-frequency", type=int, default=100, help="steps between dev evaluations")
    parser.add_argument("--train-limit", type=int, default=0, help="use only the first N training docs (0: all)")
    parser.add_argument("--speed-reps", type=int, default=3, help="timed runs over the test texts for words/s")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the children (default 1)")
    parser.add_argument("--keep-going", action="store_true", help="report failed runs instead of stopping")
    args = parser.parse_args(argv)

    config_path, data, out = Path(args.config), Path(args.data), Path(args.out)
    for split in ("train", "dev", "test"):
        if not (data / f"{split}.spacy").exists():
            raise SystemExit(f"missing {data / f'{split}.spacy'}")
    base = load_config(config_path)
    score_key = main_score_key(base)
    axes = parse_grid(args.grid or default_grid(base))
    for key, values in axes:
        try:
            get_path(base, key)
        except KeyError:
            raise SystemExit(f"grid key {key!r} is not in {config_path}") from None
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(parents=True, exist_ok=True)

    combos = [dict(zip([k for k, _ in axes], values)) for values in itertools.product(*[v for _, v in axes])]
    log(f"{len(combos)} runs of {config_path} on {data}, {args.epochs} epoch(s) each; score {score_key}")
    results, failures = [], []
    start = time.perf_counter()
    for i, setting in enumerate(combos, 1):
        slug = "_".join(f"{short(k).replace('.', '-')}-{v}" for k, v in setting.items())
        run_id = f"r{i:02d}_" + re.sub(r"[^A-Za-z0-9._-]+", "-", slug)
        log(f"[{i}/{len(combos)}] {run_id}")
        try:
            result = run_one(run_id, setting, args, base, data, out, score_key)
        except RuntimeError as err:
            failures.append({"run": run_id, "setting": setting, "error": str(err)})
            log(f"  FAILED: {err}")
            if not args.keep_going:
                break
            continue
        results.append(result)
        log(
            f"  test {score_key} {fmt(result['test_score'])}, dev {fmt(result['dev_score'])}, "
            f"train {result['train_s']:.0f} s, {result['wps']:,.0f} words/s"
        )

    summary = {
        "config": str(config_path), "data": str(data), "grid": axes, "epochs": args.epochs,
        "score_key": score_key, "threads": args.threads, "train_limit": args.train_limit,
        "results": results, "failures": failures, "total_s": time.perf_counter() - start,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf8")
    write_markdown(out / "results.md", results, failures, args, score_key, axes)
    if results:
        write_plot(out / "results.png", results, score_key, f"{config_path} on {data} ({args.epochs} epoch(s))")
    log(f"wrote {out / 'results.md'}" + (f" and {out / 'results.png'}" if results else ""))
    print((out / "results.md").read_text(encoding="utf8"))
    return 1 if failures or not results else 0


if __name__ == "__main__":
    sys.exit(main())
