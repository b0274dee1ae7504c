#!/usr/bin/env python
"""Benchmark harness: spaCy's CPU pipelines against ours, two presets each.

For each dataset it trains four systems for the same number of epochs on the
same data, in the same run, with the real CLI (``python -m spacy train`` in a
subprocess), once per seed (``--system.seed``):

* ``spacy-efficiency`` / ``spacy-accuracy``: ``python -m spacy init config -l en
  -p <pipe> -o efficiency|accuracy`` (CPU; the accuracy preset without static
  vectors: ``paths.vectors = null``, ``include_static_vectors = false``);
* ``ours-efficiency`` / ``ours-accuracy``: ``configs/<task>.cfg`` and
  ``configs/<task>_accuracy.cfg`` from the repository (a missing config is
  reported as "missing config"; the run carries on).

and then measures test scores (``python -m spacy evaluate``), training and
inference speed, peak memory (RSS) while training and while predicting, and
model size on disk against raw parameter bytes. Scores are reported as the
median over the seeds with their range. It writes
``<out>/<mode>/results.json``, ``report.md`` and ``score_vs_speed.png``.

Usage (see bench/README.md for the details of every measurement)::

    python bench/run_bench.py --quick
    python bench/run_bench.py                       # full mode, all 7 datasets, 3 seeds
    python bench/run_bench.py --datasets btc,trec6 --epochs 3 --seeds 0

This file is the orchestrator; the rest of the tool lives beside it:
``panel.py`` (datasets, tasks, systems), ``runner.py`` (every child process:
log, time limit, peak RSS), ``workers.py`` (the measurements that import
spaCy or torch, each in a fresh interpreter), ``timing_logger.py`` (the
training logger ``bench.TimingLogger.v1``, loaded by spacy train with
``--code``) and ``report.py`` (summaries, report.md, the plot). This process
imports neither spaCy nor torch, so that each measurement starts from a fresh
interpreter.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from panel import DATASETS, PRESETS, SPACY_NO_VECTORS, SYSTEMS, TASKS
from report import compare, comparison_summary, fmt, get_in, plot, ratio, summarize, write_report
from runner import REPO, child_env, log, qjoin, rel, run_cmd, run_worker, tail

DEFAULT_DATA = REPO.parent / "shared" / "data"
TIMING_LOGGER_PY = Path(__file__).resolve().parent / "timing_logger.py"


# Mode defaults. Full mode: the protocol of the targets (5 epochs, every doc
# except goemotions' train/dev caps, 3 seeds); see bench/README.md for the time
# it takes. Quick mode: a scaled protocol (subsampled data, one seed).
FULL = {
    "datasets": list(DATASETS),
    "epochs": 5,
    "seeds": [0, 1, 2],
    "train_limit": {"goemotions": 10000},
    "dev_limit": {"goemotions": 2000},
    "test_limit": {},
    "evals_per_epoch": 2,
    "train_timeout": 60 * 60,
}
QUICK = {
    "datasets": list(DATASETS),
    "epochs": 5,
    "seeds": [0],
    "train_limit": 2000,
    "dev_limit": 500,
    "test_limit": 1000,
    "evals_per_epoch": 2,
    "train_timeout": 20 * 60,
}


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            fp = os.path.join(root, f)
            if not os.path.islink(fp):
                total += os.path.getsize(fp)
    return total


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_logger_block(cfg_path: Path) -> Optional[dict]:
    """The [training.logger] block of a config, read as plain INI text."""
    import configparser

    cp = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    cp.optionxform = str
    try:
        cp.read(cfg_path)
        if cp.has_section("training.logger"):
            return {k: v.strip().strip('"') for k, v in cp.items("training.logger")}
    except configparser.Error:
        return None
    return None


def can_wrap_logger(cfg_path: Path) -> bool:
    block = read_logger_block(cfg_path)
    if not block:
        return False
    if not block.get("@loggers", "").startswith("spacy.ConsoleLogger"):
        return False
    return set(block) <= {"@loggers", "progress_bar", "console_output", "output_file"}


def machine_info() -> dict:
    model = None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "usable_cores": usable,
            "mem_total_gib": mem, "platform": platform.platform(),
            "hostname": platform.node()}


def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("spacy", "thinc", "torch", "numpy", "spacy-pytorch-shim"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO,
                                           capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        out["git_dirty"] = bool(dirty)
    except OSError:
        pass
    return out


def pick_scores(task: str, scores: dict) -> dict:
    if task == "ner":
        keys = ["ents_f", "ents_p", "ents_r"]
    elif task == "textcat":
        keys = ["cats_score", "cats_macro_f", "cats_micro_f", "cats_macro_auc"]
    else:
        keys = ["cats_macro_f", "cats_macro_auc", "cats_micro_f", "cats_score"]
    out = {k: scores.get(k) for k in keys}
    if task == "ner" and isinstance(scores.get("ents_per_type"), dict):
        out["ents_per_type"] = scores["ents_per_type"]
    return out


def run_system(ds: str, task: str, system: str, cfg: Path, data: dict, epochs: int,
               seed: int, a: argparse.Namespace, sys_dir: Path, env: dict,
               python: str = sys.executable, overrides: Optional[Dict[str, Any]] = None) -> dict:
    """Train, select, evaluate and measure one system on one dataset with one
    seed, with `python` (another virtual environment's interpreter for a
    system that cannot be installed beside ours) and config `overrides`
    (dotted keys, given to spacy train)."""
    overrides = dict(overrides or {})
    res: Dict[str, Any] = {"system": system, "seed": seed, "config": rel(cfg), "status": "ok",
                           "commands": []}
    if not cfg.exists():
        res["status"] = "missing config"
        log(f"{ds} / {system}: missing config {rel(cfg)}, skipped")
        return res
    res["config_sha256"] = sha256(cfg)
    train_p, dev_p, test_p = (data[s]["path"] for s in ("train", "dev", "test"))
    fingerprint = {"dataset": ds, "epochs": epochs, "seed": seed,
                   "config_sha256": res["config_sha256"],
                   "data": {s: [data[s]["path"], data[s]["docs"]] for s in data},
                   "batch_size": a.batch_size, "evals_per_epoch": a.evals_per_epoch,
                   "threads": a.threads, "python": python, "overrides": overrides,
                   "versions": {k: v for k, v in a._versions.items() if not k.startswith("git")}}
    cache = sys_dir / "result.json"
    if a.reuse and cache.exists():
        old = json.loads(cache.read_text())
        # A run stopped at the time limit is reused too when it had at least
        # this run's limit: run again, it would stop at the same point or earlier.
        timed_out = str(old.get("status", "")).startswith("timeout") and \
            (get_in(old, "train", "wall_s") or 0) >= a.train_timeout
        if old.get("fingerprint") == fingerprint and (old.get("status") == "ok" or timed_out):
            log(f"{ds} / {system}: reusing {rel(cache)} from {old.get('finished')}")
            old["reused"] = True
            return old
    res["fingerprint"] = fingerprint
    if sys_dir.exists():
        shutil.rmtree(sys_dir)
    sys_dir.mkdir(parents=True)
    out_dir = sys_dir / "train"

    # eval frequency: the same number of dev evaluations per epoch for both
    eval_freq = None
    try:
        st = run_worker("steps", {"config": str(cfg), "train": train_p, "dev": dev_p,
                              "epochs": epochs}, sys_dir / "steps.log", env, timeout=600, python=python)
        res["steps_per_epoch_estimate"] = st["steps_per_epoch"]
        eval_freq = max(10, int(math.ceil(st["total_steps"] / (a.evals_per_epoch * epochs))))
    except Exception as e:  # noqa: BLE001
        res["steps_error"] = str(e)[-500:]
    res["eval_frequency"] = eval_freq

    cmd = [python, "-m", "spacy", "train", str(cfg), "--output", str(out_dir),
           "--paths.train", train_p, "--paths.dev", dev_p,
           "--training.max_epochs", str(epochs), "--training.max_steps", "0",
           "--training.patience", "0", "--system.seed", str(seed)]
    if eval_freq:
        cmd += ["--training.eval_frequency", str(eval_freq)]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    timing_file = sys_dir / "timing.json"
    wrapped = can_wrap_logger(cfg)
    if wrapped:
        cmd += ["--code", str(TIMING_LOGGER_PY),
                "--training.logger.@loggers", "bench.TimingLogger.v1"]
    res["timing_logger"] = wrapped
    tenv = dict(env, BENCH_TIMING_FILE=str(timing_file))
    res["commands"].append(qjoin(cmd))
    log(f"{ds} / {system} / seed {seed}: training {epochs} epoch(s) on {data['train']['docs']} docs"
        f" (eval every {eval_freq or 'config'} steps) ...")
    tr = run_cmd(cmd, sys_dir / "train.log", timeout=a.train_timeout, env=tenv, cwd=REPO)
    train: Dict[str, Any] = {"wall_s": tr["wall_s"], "cpu_s": tr["cpu_s"],
                             "peak_rss_mb": tr["peak_rss_mb"], "rc": tr["rc"],
                             "log": tr["log"], "timed_out": tr["timed_out"],
                             "loadavg_1min": tr["loadavg_1min"]}
    words = data["train"]["words"] * epochs
    train["words_planned"] = words
    train["wps_wall"] = words / tr["wall_s"]
    train["s_per_epoch_wall"] = tr["wall_s"] / epochs
    if timing_file.exists():
        t = json.loads(timing_file.read_text())
        train_loop = t["loop_s"] - t["eval_s"] - t["save_s"]
        train.update({"loop_s": t["loop_s"], "eval_s": t["eval_s"], "save_s": t["save_s"],
                      "n_evals": t["n_evals"], "n_steps": t["n_steps"],
                      "update_s": t["update_s"], "words": t["update_words"],
                      "train_s": train_loop,
                      "wps": t["update_words"] / train_loop if train_loop > 0 else None,
                      "s_per_epoch": train_loop / epochs, "evals": t["evals"]})
        if tr["timed_out"]:  # fewer words than planned were seen
            train["wps_wall"] = t["update_words"] / tr["wall_s"]
            train["s_per_epoch_wall"] = train["s_per_epoch"] = None
        if t.get("peak_rss_mb"):
            train["peak_rss_mb"] = max(train["peak_rss_mb"] or 0, t["peak_rss_mb"])
    res["train"] = train
    best, last = out_dir / "model-best", out_dir / "model-last"
    if tr["rc"] != 0 and not tr["timed_out"]:
        res["status"] = f"failed: spacy train exited with {tr['rc']}"
        res["error_tail"] = tail(sys_dir / "train.log", 25)
        log(f"{ds} / {system}: TRAINING FAILED (rc={tr['rc']}), see {tr['log']}")
        cache.write_text(json.dumps(res, indent=1))
        return res
    if tr["timed_out"]:
        res["status"] = "timeout (partial training)"
    if not best.exists():
        res["status"] = ("timeout: no model-best yet" if tr["timed_out"]
                         else "failed: no model-best")
        cache.write_text(json.dumps(res, indent=1))
        return res
    log(f"{ds} / {system}: trained in {tr['wall_s']:.0f}s "
        f"(train wps {train.get('wps') or train['wps_wall']:.0f}, peak RSS "
        f"{train['peak_rss_mb'] or 0:.0f} MB)")

    # model selection on dev: spaCy's model-best, unless model-last (the end of
    # the final epoch, after the last dev evaluation) scores higher on dev.
    model = best
    res["selected"] = "model-best"
    if a.last_check and last.exists():
        try:
            dv = run_worker("devscore", {"models": {"model-best": str(best), "model-last": str(last)},
                                     "dev": dev_p}, sys_dir / "devscore.log", env, python=python)
            dv.pop("_proc", None)
            res["dev"] = dv
            if dv["model-last"]["score"] > dv["model-best"]["score"]:
                model, res["selected"] = last, "model-last"
        except Exception as e:  # noqa: BLE001
            res["dev_error"] = str(e)[-500:]
    res["model"] = rel(model)

    # test scores with the CLI
    scores_path = sys_dir / "scores.json"
    cmd = [python, "-m", "spacy", "evaluate", str(model), test_p,
           "--output", str(scores_path)]
    res["commands"].append(qjoin(cmd))
    log(f"{ds} / {system}: evaluating {res['selected']} on test ...")
    ev = run_cmd(cmd, sys_dir / "evaluate.log", env=env, timeout=1800, cwd=REPO)
    if ev["rc"] != 0 or not scores_path.exists():
        res["status"] = f"failed: spacy evaluate exited with {ev['rc']}"
        res["error_tail"] = tail(sys_dir / "evaluate.log", 25)
        cache.write_text(json.dumps(res, indent=1))
        return res
    res["test"] = pick_scores(task, json.loads(scores_path.read_text()))

    # inference speed, predict RSS, accuracy, parameter bytes
    log(f"{ds} / {system}: timing inference (batch_size {a.batch_size}, "
        f"median of {a.infer_runs}) ...")
    pr_args = {"model": str(model), "test": test_p, "batch_size": a.batch_size,
               "runs": a.infer_runs, "task": task}
    res["commands"].append(qjoin([python, "bench/workers.py", "predict",
                                  json.dumps(pr_args)]))
    try:
        pr = run_worker("predict", pr_args, sys_dir / "predict.log", env, timeout=1800, python=python)
    except Exception as e:  # noqa: BLE001
        res["status"] = "failed: predict worker"
        res["error_tail"] = str(e)[-1500:]
        cache.write_text(json.dumps(res, indent=1))
        return res
    proc = pr.pop("_proc")
    params = pr.pop("params")
    pr["peak_rss_mb"] = max(pr.get("peak_rss_mb") or 0, proc["peak_rss_mb"] or 0)
    pr["loadavg_1min"] = proc["loadavg_1min"]
    pr["cpu_s"] = proc["cpu_s"]
    res["infer"] = pr
    if "accuracy" in pr:
        res["test"]["accuracy"] = pr["accuracy"]
    disk = dir_bytes(model)
    res["size"] = dict(params, disk_bytes=disk,
                       disk_over_params=disk / params["param_bytes"] if params["param_bytes"] else None)
    res["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    main = " ".join(f"{k}={fmt(res['test'].get(k))}" for k in TASKS[task]["main"])
    log(f"{ds} / {system} / seed {seed}: {main}  infer wps {pr['wps']:.0f}  "
        f"predict RSS {pr['peak_rss_mb']:.0f} MB  disk {disk / 1e6:.1f} MB")
    cache.write_text(json.dumps(res, indent=1))
    return res


def interleaved_speed(ds: str, entry: dict, a: argparse.Namespace, ds_dir: Path,
                      env: dict) -> Optional[dict]:
    """The efficiency presets' inference words/s, timed interleaved in one
    process (`w_speed`) on the first seed where both ran: the ratio that the
    efficiency target is judged on. Only the efficiency pair: the target has
    no speed term for the accuracy presets, and spaCy's accuracy preset runs
    at a few thousand words/s."""
    pair = ("spacy-efficiency", "ours-efficiency")
    runs = [get_in(entry, "systems", name, "runs") or {} for name in pair]
    seed = next((s for s in runs[0] if runs[0][s].get("status") == "ok"
                 and (runs[1].get(s) or {}).get("status") == "ok"), None)
    if seed is None:
        return None
    models = {name: str(REPO / r[seed]["model"]) for name, r in zip(pair, runs)}
    log(f"{ds}: timing {' and '.join(pair)} interleaved (seed {seed}) ...")
    try:
        res = run_worker("speed", {"models": models, "test": entry["data"]["test"]["path"],
                               "batch_size": a.batch_size, "runs": max(a.infer_runs, 5)},
                     ds_dir / "speed.log", env, timeout=1800)
    except Exception as e:  # noqa: BLE001 - report and carry on
        log(f"{ds}: interleaved timing FAILED: {e}")
        return {"seed": int(seed), "error": str(e)[-500:]}
    res.pop("_proc", None)
    return {"seed": int(seed), "ratio": ratio(res[pair[1]]["wps"], res[pair[0]]["wps"]), "runs": res}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a scaled protocol: train/dev/test subsampled to at most "
                        "2000/500/1000 docs, 5 epochs, seed 0 (see bench/README.md)")
    p.add_argument("--datasets", default=None,
                   help="comma-separated subset of " + ",".join(DATASETS))
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument("--seeds", default=None,
                   help="comma-separated training seeds (--system.seed); full: 0,1,2, quick: 0")
    p.add_argument("--epochs", type=int, default=None, help="epochs for every dataset")
    p.add_argument("--out", default=str(REPO / "bench" / "results"),
                   help="results folder; the run writes to OUT/quick or OUT/full")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--train-limit", type=int, default=None,
                   help="subsample train to at most this many docs (all datasets)")
    p.add_argument("--dev-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256, help="nlp.pipe batch size")
    p.add_argument("--infer-runs", type=int, default=3)
    p.add_argument("--evals-per-epoch", type=float, default=None,
                   help="dev evaluations per epoch (sets --training.eval_frequency)")
    p.add_argument("--threads", type=int, default=None,
                   help="set OMP/MKL/OPENBLAS threads and torch.set_num_threads in all "
                        "subprocesses (default: library defaults)")
    p.add_argument("--train-timeout", type=float, default=None,
                   help="seconds per spacy train run; on timeout the run is stopped and "
                        "its model-best evaluated, marked 'timeout'")
    p.add_argument("--no-last-check", dest="last_check", action="store_false",
                   help="always use model-best (do not also score model-last on dev)")
    p.add_argument("--reuse", action="store_true",
                   help="reuse a system's earlier result in the same output folder when "
                        "config, data, epochs and versions are unchanged")
    p.add_argument("--shim-overhead", default=None,
                   help="markdown file (from bench/shim_overhead.py) to include in the report")
    p.add_argument("--ours-config-dir", default=str(REPO / "configs"),
                   help="folder with our presets: <task>.cfg (efficiency) and "
                        "<task>_accuracy.cfg")
    a = p.parse_args(argv)

    mode = "quick" if a.quick else "full"
    M = QUICK if a.quick else FULL
    datasets = a.datasets.split(",") if a.datasets else list(M["datasets"])
    for ds in datasets:
        if ds not in DATASETS:
            p.error(f"unknown dataset {ds!r}; choose from {','.join(DATASETS)}")
    systems = [s for s in a.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            p.error(f"unknown system {s!r}")
    seeds = [int(x) for x in a.seeds.split(",")] if a.seeds else list(M["seeds"])
    if a.evals_per_epoch is None:
        a.evals_per_epoch = M["evals_per_epoch"]
    if a.train_timeout is None:
        a.train_timeout = M["train_timeout"]
    a._versions = versions()

    out = Path(a.out) / mode
    out.mkdir(parents=True, exist_ok=True)
    env = child_env(a.threads)
    data_dir = Path(a.data_dir)
    started = _dt.datetime.now(_dt.timezone.utc)
    log(f"mode={mode} datasets={','.join(datasets)} systems={','.join(systems)} "
        f"seeds={','.join(map(str, seeds))} out={rel(out)}")

    # spaCy's own configs, both presets
    cfg_dir = out / "configs"
    cfg_dir.mkdir(exist_ok=True)
    init_cmds = []
    spacy_cfgs = {}
    for task in sorted({DATASETS[ds] for ds in datasets}):
        pipe = TASKS[task]["pipe"]
        for preset in PRESETS:
            if f"spacy-{preset}" not in systems:
                continue
            path = cfg_dir / f"spacy_{pipe}_{preset}.cfg"
            overrides = SPACY_NO_VECTORS if preset == "accuracy" else {}
            run_worker("spacy_config", {"pipe": pipe, "optimize": preset, "path": str(path),
                                    "set": overrides},
                   cfg_dir / f"init_{pipe}_{preset}.log", env, timeout=300)
            init_cmds.append(qjoin([sys.executable, "-m", "spacy", "init", "config", "-l", "en",
                                    "-p", pipe, "-o", preset, str(path)])
                             + "".join(f" # then {k} = {json.dumps(val)}"
                                       for k, val in overrides.items()))
            spacy_cfgs[task, preset] = path

    results: Dict[str, Any] = {
        "mode": mode,
        "argv": qjoin(["python", "bench/run_bench.py"] + (sys.argv[1:] if argv is None else argv)),
        "started": started.isoformat(timespec="seconds"), "machine": machine_info(),
        "versions": a._versions, "init_commands": init_cmds,
        "settings": {"batch_size": a.batch_size, "infer_runs": a.infer_runs,
                     "threads": a.threads, "evals_per_epoch": a.evals_per_epoch,
                     "train_timeout": a.train_timeout, "last_check": a.last_check,
                     "systems": systems, "seeds": seeds},
        "datasets": {},
    }
    res_path = out / "results.json"

    def save(final=False):
        now = _dt.datetime.now(_dt.timezone.utc)
        results["finished"] = now.isoformat(timespec="seconds")
        results["elapsed_min"] = (now - started).total_seconds() / 60
        results["complete"] = final
        res_path.write_text(json.dumps(results, indent=1))

    for ds in datasets:
        task = DATASETS[ds]
        epochs = a.epochs if a.epochs is not None else M["epochs"]

        def lim(split):
            v = getattr(a, f"{split}_limit")
            if v is not None:
                return v
            m = M[f"{split}_limit"]
            return m.get(ds) if isinstance(m, dict) else m

        limits = {s: lim(s) for s in ("train", "dev", "test")}
        src = {s: str(data_dir / ds / f"{s}.spacy") for s in ("train", "dev", "test")}
        if not all(Path(v).exists() for v in src.values()):
            log(f"{ds}: data missing under {data_dir / ds}, skipped")
            results["datasets"][ds] = {"task": task, "epochs": epochs, "data": {},
                                       "systems": {}, "error": "data missing"}
            continue
        dst = {s: str(out / "data" / ds / f"{s}.spacy") for s in ("train", "dev", "test")}
        log(f"{ds}: preparing data (limits {limits}) ...")
        data = run_worker("prepare", {"src": src, "dst": dst, "limits": limits, "seed": 0},
                      out / "data" / ds / "prepare.log", env)
        data.pop("_proc", None)
        entry = {"task": task, "epochs": epochs, "data": data, "systems": {}}
        results["datasets"][ds] = entry
        for sysname in systems:
            side, preset = SYSTEMS[sysname]
            cfg = spacy_cfgs[task, preset] if side == "spacy" else \
                Path(a.ours_config_dir) / Path(TASKS[task]["ours_cfg"][preset]).name
            sys_entry = {"config": rel(cfg), "runs": {}}
            entry["systems"][sysname] = sys_entry
            for seed in seeds:
                t = time.time()
                try:
                    r = run_system(ds, task, sysname, cfg, data, epochs, seed, a,
                                   out / "runs" / ds / sysname / f"seed{seed}", env)
                except Exception as e:  # noqa: BLE001 - report and carry on
                    r = {"system": sysname, "seed": seed, "config": rel(cfg),
                         "status": f"failed: {type(e).__name__}", "error_tail": str(e)[-2000:]}
                    log(f"{ds} / {sysname} / seed {seed}: FAILED: {e}")
                r["total_s"] = time.time() - t
                sys_entry["runs"][str(seed)] = r
                sys_entry["summary"] = summarize(task, sys_entry["runs"])
                entry["compare"] = compare(task, entry["systems"])
                save()
        entry["interleaved_speed"] = interleaved_speed(ds, entry, a, out / "runs" / ds, env)
        entry["compare"] = compare(task, entry["systems"], entry["interleaved_speed"])
        save()
    plot(results, out)
    save(final=True)
    shim = Path(a.shim_overhead) if a.shim_overhead else None
    write_report(results, out, shim)
    (out / "summary.json").write_text(json.dumps(comparison_summary(results), indent=1))
    log(f"done: {rel(res_path)}, {rel(out / 'report.md')}, {rel(out / 'score_vs_speed.png')}, "
        f"{rel(out / 'summary.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
