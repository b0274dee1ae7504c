"""The benchmark's numbers, summarised and written: medians and ranges over
the seeds, ours against spaCy preset by preset, `report.md` and the plot of
score against inference speed, all from a run's results.json."""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional

from panel import SYSTEMS, TASK_TITLES, TASKS, PRESETS
from runner import log, rel


def ratio(a, b):
    try:
        return a / b if a is not None and b else None
    except TypeError:
        return None


def get_in(d, *keys):
    """d[k1][k2]..., None where a level is missing."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def fmt(v, spec=".3f", scale=1.0):
    if v is None:
        return "–"
    try:
        return format(v * scale, spec)
    except (TypeError, ValueError):
        return str(v)


def score_keys(task: str) -> List[str]:
    """Main scores first, then the other test scores of the task's tables."""
    extra = {"ner": ["ents_p", "ents_r"],
             "textcat": ["accuracy", "cats_macro_auc"],
             "textcat_multilabel": ["cats_micro_f"]}[task]
    return TASKS[task]["main"] + extra


def spread(values: List[Optional[float]]) -> Optional[dict]:
    """Median, min, max and count of the values given (None left out)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def summarize(task: str, runs: Dict[str, dict]) -> dict:
    """Median and range over the seeds that ran to the end (status ok)."""
    ok = [r for r in runs.values() if r.get("status") == "ok"]
    out = {"seeds_ok": [r["seed"] for r in ok], "seeds": [r.get("seed") for r in runs.values()]}
    for k in score_keys(task):
        out[k] = spread([get_in(r, "test", k) for r in ok])
    out["infer_wps"] = spread([get_in(r, "infer", "wps") for r in ok])
    out["train_wps"] = spread([get_in(r, "train", "wps") or get_in(r, "train", "wps_wall")
                                for r in ok])
    out["train_rss_mb"] = spread([get_in(r, "train", "peak_rss_mb") for r in ok])
    out["predict_rss_mb"] = spread([get_in(r, "infer", "peak_rss_mb") for r in ok])
    out["disk_bytes"] = spread([get_in(r, "size", "disk_bytes") for r in ok])
    out["param_bytes"] = spread([get_in(r, "size", "param_bytes") for r in ok])
    out["selected"] = {sel: sum(1 for r in ok if r.get("selected") == sel)
                       for sel in {r.get("selected") for r in ok}}
    return out


def compare(task: str, systems: dict, interleaved: Optional[dict] = None) -> Dict[str, dict]:
    """Per preset: ours minus spaCy on the median of every main score (in
    points), whether the seed ranges overlap, the inference speed ratio and
    whether the target holds (every main score +1 point; efficiency also at
    >= 1.0x spaCy's inference words/s, the interleaved ratio where there is
    one, else the ratio of the systems' own predict runs)."""
    out = {}
    for preset in PRESETS:
        s = get_in(systems, f"spacy-{preset}", "summary")
        o = get_in(systems, f"ours-{preset}", "summary")
        if not s or not o:
            continue
        row: Dict[str, Any] = {"scores": {}}
        met = True
        for k in TASKS[task]["main"]:
            sv, ov = s.get(k), o.get(k)
            if not sv or not ov:
                met = None
                continue
            delta = ov["median"] - sv["median"]
            row["scores"][k] = {"delta_points": 100 * delta,
                                "ranges_overlap": ov["min"] <= sv["max"] and sv["min"] <= ov["max"]}
            met = met and delta >= 0.01
        row["infer_wps_ratio"] = ratio(get_in(o, "infer_wps", "median"), get_in(s, "infer_wps", "median"))
        speed = row["infer_wps_ratio"]
        if preset == "efficiency" and interleaved and interleaved.get("ratio") is not None:
            speed = row["infer_wps_ratio_interleaved"] = interleaved["ratio"]
        if preset == "efficiency" and met:
            met = speed is not None and speed >= 1.0
        row["target_met"] = met
        row["seeds"] = [len(s["seeds_ok"]), len(o["seeds_ok"])]
        out[preset] = row
    return out


def fmt_spread(sp: Optional[dict], spec=".3f", scale=1.0) -> str:
    if not sp:
        return "–"
    if sp["n"] == 1:
        return fmt(sp["median"], spec, scale)
    return (f"{fmt(sp['median'], spec, scale)} "
            f"[{fmt(sp['min'], spec, scale)}–{fmt(sp['max'], spec, scale)}]")


def table_head(title: str, columns: List[str]) -> List[str]:
    """A section's heading and the head of its markdown table."""
    return [f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def write_report(results: dict, out: Path, shim_overhead: Optional[Path]) -> str:
    L: List[str] = []
    mode = results["mode"]
    L.append(f"# Benchmark: spaCy's efficiency and accuracy pipelines vs spacy-pytorch-shim ({mode} mode)")
    L.append("")
    L.append(f"Run {results['started']} – {results['finished']} "
             f"({results['elapsed_min']:.1f} min). Command: `{results['argv']}`")
    L.append("")
    m, v = results["machine"], results["versions"]
    L.append(f"**Machine:** {m['cpu_model']}, {m['usable_cores']} usable cores "
             f"(os.cpu_count {m['cpu_count']}), {m['mem_total_gib']} GiB RAM, "
             f"{m['platform']}. CPU only.  ")
    L.append("**Versions:** " + ", ".join(f"{k} {val}" for k, val in v.items()
                                         if k not in ("git_commit", "git_dirty")) +
             f", git {str(v.get('git_commit'))[:10]}{' (dirty)' if v.get('git_dirty') else ''}.  ")
    st = results["settings"]
    L.append(f"**Settings:** seeds {', '.join(map(str, st['seeds']))} (scores: median "
             f"[min–max] over the seeds); inference batch_size {st['batch_size']}, median of "
             f"{st['infer_runs']} timed runs after a warm-up; threads: "
             f"{st['threads'] or 'library defaults'}; dev evaluations per epoch: "
             f"{st['evals_per_epoch']}; train timeout {st['train_timeout']} s per run.")
    L.append("")
    # targets: ours against spaCy's preset of the same name
    L.append("## Ours against spaCy, preset by preset")
    L.append("")
    L.append("Target: every main score of ours >= spaCy's + 1 point (median over the "
             "seeds), and for the efficiency preset inference words/s >= 1.0x spaCy's. "
             "\"overlap\": the two seed ranges overlap, so the difference is within the noise. "
             "Inference words/s ours/spaCy: \"own runs\", the medians of each system's own "
             "predict runs (timed minutes apart); \"interleaved\", the two efficiency "
             "pipelines timed in one process, round by round (the ratio the efficiency "
             "target is judged on).")
    L.append("")
    L.append("| dataset | task | preset | main score | spaCy | ours | ours − spaCy (points) "
             "| inference wps ours/spaCy: own runs | interleaved | target |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for ds, d in results["datasets"].items():
        for preset, c in (d.get("compare") or {}).items():
            for k in TASKS[d["task"]]["main"]:
                sc = c["scores"].get(k)
                delta = "–" if not sc else (f"{sc['delta_points']:+.1f}"
                                            + (" (overlap)" if sc["ranges_overlap"] else ""))
                verdict = {True: "met", False: "missed", None: "not measured"}[c["target_met"]]
                L.append(f"| {ds} | {d['task']} | {preset} | {k} | "
                         f"{fmt_spread(get_in(d, 'systems', f'spacy-{preset}', 'summary', k))} | "
                         f"{fmt_spread(get_in(d, 'systems', f'ours-{preset}', 'summary', k))} | "
                         f"{delta} | {fmt(c['infer_wps_ratio'], '.2f')} | "
                         f"{fmt(c.get('infer_wps_ratio_interleaved'), '.2f')} | {verdict} |")
    L.append("")
    if (out / "score_vs_speed.png").exists():
        L.append("![score against inference speed](score_vs_speed.png)")
        L.append("")
    # per task tables: medians [ranges] over the seeds
    names = {"ents_f": "ents_f", "ents_p": "ents_p", "ents_r": "ents_r",
             "accuracy": "accuracy", "cats_macro_f": "macro F",
             "cats_macro_auc": "macro AUC", "cats_micro_f": "micro F"}
    for task in TASKS:
        rows = [(ds, d) for ds, d in results["datasets"].items() if d["task"] == task]
        if not rows:
            continue
        L.append(f"## {TASK_TITLES[task]}")
        L.append("")
        keys = score_keys(task)
        head = (["dataset", "system", "seeds ok", "epochs", "train docs"]
                + [names[k] for k in keys]
                + ["infer wps", "train wps", "train RSS MB", "predict RSS MB", "disk MB",
                   "param MB", "selected"])
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for ds, d in rows:
            for sysname in SYSTEMS:
                r = d["systems"].get(sysname)
                if r is None:
                    continue
                sm = r["summary"]
                cells = [ds, sysname, f"{len(sm['seeds_ok'])}/{len(sm['seeds'])}",
                         str(d["epochs"]), str(get_in(d, "data", "train", "docs"))]
                cells += [fmt_spread(sm.get(k)) for k in keys]
                cells += [fmt_spread(sm["infer_wps"], ".0f"), fmt_spread(sm["train_wps"], ".0f"),
                          fmt(get_in(sm, "train_rss_mb", "median"), ".0f"),
                          fmt(get_in(sm, "predict_rss_mb", "median"), ".0f"),
                          fmt(get_in(sm, "disk_bytes", "median"), ".1f", 1e-6),
                          fmt(get_in(sm, "param_bytes", "median"), ".1f", 1e-6),
                          ", ".join(f"{k} {n}" for k, n in sorted(sm["selected"].items())) or "–"]
                L.append("| " + " | ".join(cells) + " |")
        L.append("")
    # every run
    L += table_head("Every run", ["dataset", "system", "seed", "status", "scores", "infer wps",
                                  "train wall s", "selected"])
    for ds, d in results["datasets"].items():
        for sysname, r in d["systems"].items():
            for run in r["runs"].values():
                status = run["status"] + (f" (reused, {run.get('finished')})" if run.get("reused") else "")
                scores = ", ".join(f"{names[k]} {fmt(get_in(run, 'test', k))}"
                                   for k in TASKS[d["task"]]["main"])
                L.append(f"| {ds} | {sysname} | {run.get('seed')} | {status} | {scores} | "
                         f"{fmt(get_in(run, 'infer', 'wps'), '.0f')} | "
                         f"{fmt(get_in(run, 'train', 'wall_s'), '.0f')} | {run.get('selected', '–')} |")
    L.append("")
    # data
    L += table_head("Data", ["dataset", "split", "docs used", "words", "source docs", "subsampled", "path"])
    for ds, d in results["datasets"].items():
        for split, info in d["data"].items():
            L.append(f"| {ds} | {split} | {info['docs']} | {info['words']} | {info['source_docs']} | "
                     f"{'yes (seed 0)' if info['subsampled'] else 'no'} | `{rel(info['path'])}` |")
    L.append("")
    # definitions
    L.append("## How the numbers are measured")
    L.append("")
    L.append(DEFINITIONS)
    L.append("")
    # commands
    L.append("## Exact commands")
    L.append("")
    L.append("```")
    L.append(results["argv"])
    for c in results.get("init_commands", []):
        L.append(c)
    for ds, d in results["datasets"].items():
        for sysname in SYSTEMS:
            for run in get_in(d, "systems", sysname, "runs", ) or {}:
                for c in d["systems"][sysname]["runs"][run].get("commands", []):
                    L.append(c)
    L.append("```")
    L.append("")
    if shim_overhead is not None:
        L.append("## Shim overhead")
        L.append("")
        if shim_overhead.exists():
            L.append(f"(included from `{rel(shim_overhead)}`, produced by `bench/shim_overhead.py`)")
            L.append("")
            L.append(shim_overhead.read_text().strip())
        else:
            L.append(f"`{rel(shim_overhead)}` not found: run `bench/shim_overhead.py` first.")
        L.append("")
    # machine load: other processes on the machine distort every timing
    L.append("## Machine load during the measurements")
    L.append("")
    L.append("1-minute load average at start and end of each training run and "
             "prediction worker, and the CPU seconds (user + sys) of the training "
             "process. Timings taken while the load exceeds the number of usable "
             f"cores ({m['usable_cores']}) are inflated by other processes.")
    L.append("")
    L.append("| dataset | system | seed | train load (start→end) | train wall s | train CPU s | predict load (start→end) |")
    L.append("|---|---|---|---|---|---|---|")
    busy = False
    for ds, d in results["datasets"].items():
        for sysname, r in ((f"{s} | {run['seed']}", run) for s, sr in d["systems"].items()
                           for run in sr["runs"].values()):
            tl = get_in(r, "train", "loadavg_1min")
            pl = get_in(r, "infer", "loadavg_1min")
            if not tl:
                continue
            busy |= max(tl + (pl or [])) > (m["usable_cores"] or 1) + 0.5
            L.append(f"| {ds} | {sysname} | {tl[0]}→{tl[1]} | {fmt(get_in(r, 'train', 'wall_s'), '.0f')} | "
                     f"{fmt(get_in(r, 'train', 'cpu_s'), '.0f')} | "
                     f"{'→'.join(map(str, pl)) if pl else '–'} |")
    L.append("")
    if busy:
        L.append("**Warning:** the machine was busy with other processes during part of "
                 "this run (load above the core count); speed numbers are pessimistic "
                 "and the ratios noisier than usual.")
        L.append("")
    # problems
    probs = [(ds, f"{s} / seed {r.get('seed')}", r) for ds, d in results["datasets"].items()
             for s, sr in d["systems"].items() for r in sr["runs"].values()
             if r.get("status") != "ok"]
    if probs:
        L.append("## Problems")
        L.append("")
        for ds, s, r in probs:
            L.append(f"* {ds} / {s}: {r['status']}" + (f" ({r.get('config')})" if r.get("config") else ""))
            if r.get("error_tail"):
                L.append("")
                L.append("  ```")
                L.extend("  " + line for line in r["error_tail"].splitlines()[-12:])
                L.append("  ```")
        L.append("")
    text = "\n".join(L)
    (out / "report.md").write_text(text)
    return text


DEFINITIONS = """\
* **Training**: `python -m spacy train CFG --output DIR --paths.train … --paths.dev …
  --training.max_epochs N --training.max_steps 0 --training.patience 0
  --system.seed S` in a subprocess, once per seed S; every score is reported
  as the median [min–max] over the seeds that ran to the end. In spaCy 3.8 `max_steps = 0` and `patience = 0` both mean "no
  limit" (`if max_steps and step >= max_steps`, `if patience and …`), so
  exactly N epochs run. spaCy evaluates on dev only every `eval_frequency`
  steps (not at epoch ends); the harness sets `--training.eval_frequency` per
  system so that both get about the same number of dev evaluations per epoch
  (steps counted by running the config's own batcher over the train set for N
  epochs, in a worker, before training).
* **Model selection**: on dev only. `model-best` is spaCy's best dev checkpoint;
  because the steps after the last dev evaluation are never scored by spacy
  train, the harness also scores `model-last` on dev (weighted score from the
  config's `training.score_weights`, exactly as spacy train computes it) and
  takes it when it is higher (column "selected"). The test set is used only
  for the reported scores.
* **Test scores**: `python -m spacy evaluate MODEL test.spacy --output scores.json`
  (NER: ents_f/p/r; textcat: cats_macro_f, cats_macro_auc, cats_micro_f).
  Main scores: ents_f; macro F (exclusive); macro AUC and macro F (multi-label).
  **Accuracy** (exclusive textcat) is computed by the harness: argmax of the
  predicted `doc.cats` against the argmax of the gold `doc.cats` over all
  test docs (predictions from `nlp.pipe` on the test texts).
* **Train wps**: words passed to `nlp.update` divided by the time of the
  training loop minus dev evaluations and checkpoint saves, measured inside
  `spacy train` by the logger `bench.TimingLogger.v1` (`bench/timing_logger.py`,
  loaded with `--code`, wrapping spaCy's console logger; used only when the config's
  logger is a plain `spacy.ConsoleLogger`). **Train wps (wall)**: words in the
  train set × epochs / wall time of the whole `spacy train` process (includes
  start-up, initialization, dev evaluations and saving). **s/epoch** is the
  loop time (without evaluations/saves) per epoch, else wall time per epoch.
* **Inference wps**: one fresh process, CPU, `nlp.pipe(test texts,
  batch_size=B)`, a warm-up over the first 2·B texts and one untimed pass over
  all test texts, then the median of 3 timed runs; a run is k passes over all
  test texts, with k chosen so that a run lasts ≥ 0.5 s (k = 1 except for
  tiny test sets); words = tokens of the output docs × k.
* **Peak RSS**: training: VmHWM of the `spacy train` process (polled from
  `/proc/PID/status` every 0.1 s, and read by the logger at the end of the
  loop; VmHWM is per address space, so the parent's memory does not leak into
  it as it does with `ru_maxrss` of a forked child). Predicting: VmHWM of the
  prediction worker (imports, model load, test docs and all timed passes).
* **Size**: disk = bytes of all files in the selected model directory;
  params = for every pipeline component, every Thinc node in
  `component.model.walk()`: nbytes of its param arrays, plus, for each torch
  shim of the node, `sum(t.numel() * t.element_size() for t in
  shim._model.state_dict().values())` (nodes and shims de-duplicated).
"""


def speed_axes(ax, formatter, xlabel: str, ylabel: str, title: str, legend_size: int) -> None:
    """A plot panel with speed on a log x axis, labelled at 1, 2 and 5 of each
    decade (matplotlib's own minor labels overlap on spans of one to two
    decades)."""
    import matplotlib.ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(formatter)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend_size)


def plot(results: dict, out: Path) -> Optional[Path]:
    """Test score (median over the seeds, bar: range) against inference
    words/s (median), one panel per main score of each task."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        log("matplotlib not available: no plot")
        return None
    panels = [(t, k) for t in TASKS if any(d["task"] == t for d in results["datasets"].values())
              for k in TASKS[t]["main"]]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.8), squeeze=False)
    markers = {"spacy-efficiency": "o", "spacy-accuracy": "^",
               "ours-efficiency": "s", "ours-accuracy": "D"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (task, main) in zip(axes[0], panels):
        for i, (ds, d) in enumerate((k, v) for k, v in results["datasets"].items()
                                    if v["task"] == task):
            for sysname in SYSTEMS:
                sm = get_in(d, "systems", sysname, "summary") or {}
                x, y = get_in(sm, "infer_wps", "median"), sm.get(main)
                if x is None or not y:
                    continue
                ax.errorbar([x], [y["median"]],
                            yerr=[[y["median"] - y["min"]], [y["max"] - y["median"]]],
                            fmt=markers[sysname], ms=7, capsize=3,
                            color=colors[i % len(colors)],
                            mfc="none" if sysname.startswith("spacy") else colors[i % len(colors)],
                            label=f"{ds} / {sysname}")
        speed_axes(ax, matplotlib.ticker.EngFormatter(sep=""), "inference words/second (log scale)",
                   f"test {main}", f"{TASK_TITLES[task]}: {main}", legend_size=6)
    fig.suptitle(f"Score against inference speed ({results['mode']} mode, median of seeds "
                 f"{', '.join(map(str, results['settings']['seeds']))}; bars: range). "
                 f"spaCy hollow (o efficiency, ^ accuracy), ours filled (s efficiency, D accuracy)",
                 fontsize=9)
    fig.tight_layout()
    path = out / "score_vs_speed.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------
# the comparison summary: what docs/benchmarks.md shows, from one JSON file
# --------------------------------------------------------------------------
SCORE_NAMES = {"ents_f": "ents_f", "cats_macro_f": "macro F", "cats_macro_auc": "macro AUC"}


def comparison_summary(results: dict) -> dict:
    """The comparison of a run (results.json), reduced to what the user docs
    show: per dataset and preset, spaCy's and our main scores (median, range
    over the seeds) and the inference words/s ratio ours/spaCy (interleaved
    where the run timed it so, else from the systems' own predict runs)."""
    datasets = {}
    for ds, d in results["datasets"].items():
        presets = {}
        for preset, c in (d.get("compare") or {}).items():
            interleaved = c.get("infer_wps_ratio_interleaved")
            presets[preset] = {
                "scores": {k: {side: get_in(d, "systems", f"{side}-{preset}", "summary", k)
                               for side in ("spacy", "ours")}
                           for k in TASKS[d["task"]]["main"]},
                "wps_ratio": interleaved if interleaved is not None else c.get("infer_wps_ratio"),
                "wps_timing": "interleaved" if interleaved is not None else "own runs",
            }
        datasets[ds] = {"task": d["task"], "presets": presets}
    return {"protocol": results["mode"], "seeds": results["settings"]["seeds"],
            "versions": results["versions"], "datasets": datasets}


def comparison_table(summary: dict) -> str:
    """The markdown table of docs/benchmarks.md: ours against spaCy, preset by
    preset, on every main score of every dataset."""
    lines = ["| dataset | main score | preset | spaCy | ours | ours − spaCy (points) | words/s ours/spaCy |",
             "|---|---|---|---|---|---|---|"]
    for ds, d in summary["datasets"].items():
        for preset in PRESETS:
            p = d["presets"].get(preset)
            if p is None:
                continue
            for i, (k, sides) in enumerate(p["scores"].items()):
                spacy, ours = sides["spacy"], sides["ours"]
                delta = "–"
                if spacy and ours:
                    overlap = ours["min"] <= spacy["max"] and spacy["min"] <= ours["max"]
                    delta = f"{100 * (ours['median'] - spacy['median']):+.1f}" + (" (ranges overlap)" if overlap else "")
                speed = "" if i else speed_ratio(p.get("wps_ratio"))
                lines.append(f"| {ds} | {SCORE_NAMES[k]} | {preset} | {fmt_spread(spacy) if spacy else 'not measured'} "
                             f"| {fmt_spread(ours)} | {delta} | {speed} |")
    notes = [f"* {ds}, {preset}: {p['note']}" for ds, d in summary["datasets"].items()
             for preset, p in d["presets"].items() if p.get("note")]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def speed_ratio(value: Optional[float]) -> str:
    """2.18x, 16x: two decimals below 10x, none above."""
    if not value:
        return "–"
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


def plot_comparison(summary: dict, path: Path) -> Path:
    """Ours − spaCy in points (median; bar: the two seed ranges' extremes)
    against the words/s ratio ours/spaCy, one panel per preset, one point per
    dataset and main score: up is more accurate than spaCy, right faster."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(PRESETS), figsize=(6 * len(PRESETS), 4.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = {"ner": "o", "textcat": "s", "textcat_multilabel": "D"}
    for ax, preset in zip(axes[0], PRESETS):
        for i, (ds, d) in enumerate(summary["datasets"].items()):
            p = d["presets"].get(preset) or {}
            x = p.get("wps_ratio")
            for k, sides in (p.get("scores") or {}).items():
                spacy, ours = sides["spacy"], sides["ours"]
                if not (x and spacy and ours):
                    continue
                y = 100 * (ours["median"] - spacy["median"])
                low, high = 100 * (ours["min"] - spacy["max"]), 100 * (ours["max"] - spacy["min"])
                name = ds if len(p["scores"]) == 1 else f"{ds} {SCORE_NAMES[k]}"
                ax.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt=markers[d["task"]], ms=7,
                            capsize=3, color=colors[i % len(colors)],
                            mfc="none" if k == "cats_macro_f" and d["task"] == "textcat_multilabel" else None,
                            label=name)
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(1, color="grey", lw=0.8)
        speed_axes(ax, matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"),
                   "inference words/s, ours / spaCy (log scale)", "test score, ours − spaCy (points)",
                   f"{preset} presets", legend_size=7)
    fig.suptitle(f"Ours against spaCy, {summary['protocol']} protocol, median of seeds "
                 f"{', '.join(map(str, summary['seeds']))} (bars: the seed ranges' extremes); "
                 "o NER, s exclusive textcat, D multi-label (hollow: macro F)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="The comparison table (markdown, to stdout) and, "
                                "with --plot, its plot, from a summary.json that run_bench.py wrote "
                                "(or the committed docs/benchmarks-results.json).")
    p.add_argument("summary", help="summary.json")
    p.add_argument("--plot", default=None, help="write the plot here (PNG)")
    a = p.parse_args(argv)
    summary = json.loads(Path(a.summary).read_text(encoding="utf8"))
    print(comparison_table(summary), end="")
    if a.plot:
        plot_comparison(summary, Path(a.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
