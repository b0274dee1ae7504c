#!/usr/bin/env python
"""Distillation benchmark: a fast student trained on a transformer teacher's
stored outputs, against the same student trained on gold only, on the panel,
on CPU.

Per dataset, with the scaled protocol and splits of bench/transformer.py
(which this reuses: `--teacher-out`, its output directory):

* the teacher: our transformer preset with all-MiniLM-L6-v2, trained with
  bench/transformer.py's settings (seed `--teacher-seed`; a finished run of
  bench/transformer.py in `--teacher-out` is reused);
* unlabelled text of the same domain: up to `--unlabelled` texts of the
  dataset's own full training split that are in none of the splits the runs
  train, select and score on (the scaled protocol uses at most 1,500 of each
  training split; the rest is the same source, time and annotation guide,
  with its labels dropped);
* `spacy teacher-targets` scores it once (its wall time, peak RSS and disk
  size are recorded);
* the students, 3 seeds each, the same epochs: ``gold-only``, our efficiency
  preset (configs/<task>.cfg; its runs in `--teacher-out` are reused), and
  ``distilled``, the same preset from `spacy init torch-config --distill`
  (the gold data and `targets_ratio` scored docs per gold one);
* inference words/s of the teacher and the first distilled student, timed
  interleaved in one process at one thread.

`--stream-docs 10000,1000000` also measures the peak RSS of
`spacy teacher-targets` on that many docs (the first dataset's unlabelled
texts repeated), which must stay flat. The scoring pipeline there is the
first dataset's gold-only student: streaming does not depend on the model,
and the transformer teacher scores about 100 tweets/s on this machine
(about 3 hours per million).

    python bench/distill.py --encoder DIR --teacher-out bench/results/transformer
    python bench/distill.py --datasets btc,trec6 --seeds 0 --encoder DIR
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from spacy_pytorch_shim.annotate.manifest import pipeline_fingerprint as folder_sha256

from panel import DATASETS, TASKS
from report import fmt, fmt_spread, get_in, ratio, summarize
from run_bench import DEFAULT_DATA, run_system, versions
from runner import REPO, child_env, log, qjoin, rel, run_cmd, run_worker
from transformer import EPOCHS, encoder_width, minilm_dir, prepare, schedule

UNLABELLED = 4000
LONG_DOC_UNLABELLED = {"imdb": 600}  # reviews ~10x longer than the other sets' texts


def teacher_run(ds: str, task: str, data: dict, a: argparse.Namespace, env: dict) -> dict:
    """The transformer teacher of `ds`: bench/transformer.py's run, reused
    where it finished with the same settings."""
    cfg = REPO / "configs" / f"{task}_transformer.cfg"
    run_dir = a.teacher_out / "runs" / ds / "ours-transformer"
    overrides = schedule(cfg, data, sys.executable, run_dir, env)
    overrides.update({"encoder.name": str(a.encoder), "encoder.width": encoder_width(a.encoder)})
    return run_system(ds, task, "ours-transformer", cfg, data, EPOCHS, a.teacher_seed, a,
                      run_dir / f"seed{a.teacher_seed}", env, overrides=overrides)


def score_unlabelled(ds: str, data: dict, teacher: dict, a: argparse.Namespace, env: dict) -> dict:
    """Unlabelled texts of `ds` and the teacher's stored outputs on them."""
    ds_dir = a.out / "runs" / ds
    source = data["train"].get("source", data["train"]["path"])
    texts = ds_dir / "unlabelled.jsonl"
    info = run_worker("unlabelled", {"source": source, "exclude": [data[s]["path"] for s in ("train", "dev", "test")],
                                     "docs": LONG_DOC_UNLABELLED.get(ds, a.unlabelled), "out": str(texts), "seed": 0},
                      ds_dir / "unlabelled.log", env)
    info.pop("_proc", None)
    targets = ds_dir / "targets"
    cache = ds_dir / "targets.json"
    # The same texts scored by the same teacher run: its targets are reused.
    fingerprint = {"unlabelled": info, "teacher": teacher["model"], "teacher_finished": teacher.get("finished")}
    if a.reuse and cache.exists() and (targets / "teacher.json").exists():
        old = json.loads(cache.read_text())
        if old.get("fingerprint") == fingerprint:
            log(f"{ds}: reusing the teacher's targets in {rel(targets)}")
            return dict(old, sha256=folder_sha256(targets))
    shutil.rmtree(targets, ignore_errors=True)
    cmd = [sys.executable, "-m", "spacy", "teacher-targets", REPO / teacher["model"], texts, targets]
    log(f"{ds}: teacher-targets on {info['docs']} unlabelled docs ({info['words']} words) ...")
    run = run_cmd(cmd, ds_dir / "teacher_targets.log", env=env, timeout=3 * 3600, cwd=REPO)
    if run["rc"] != 0:
        raise RuntimeError(f"teacher-targets exited with {run['rc']}, see {run['log']}")
    disk = sum(f.stat().st_size for f in targets.rglob("*") if f.is_file())
    res = {"fingerprint": fingerprint, "unlabelled": info, "command": qjoin(cmd), "targets": str(targets),
           "wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"], "disk_bytes": disk,
           "bytes_per_doc": disk / max(1, info["docs"]), "words_per_s": info["words"] / run["wall_s"]}
    cache.write_text(json.dumps(res, indent=1))
    return dict(res, sha256=folder_sha256(targets))


def student_config(task: str, out: Path, env: dict) -> Path:
    """Our efficiency preset for `task`, as `init torch-config --distill` writes it."""
    path = out / "configs" / f"student_{task}.cfg"
    cmd = [sys.executable, "-m", "spacy", "init", "torch-config", path, "--pipeline", TASKS[task]["pipe"],
           "--distill", "--force"]
    if run_cmd(cmd, out / "configs" / f"student_{task}.log", env=env, cwd=REPO)["rc"] != 0:
        raise RuntimeError(f"init torch-config --distill failed for {task}")
    return path


def speed(ds: str, teacher: dict, student: dict, data: dict, a: argparse.Namespace, env: dict) -> dict:
    """Teacher's and student's inference words/s, timed interleaved in one
    process (reused for the same two finished runs)."""
    cache = a.out / "runs" / ds / "speed_result.json"
    models = {"teacher": str(REPO / teacher["model"]), "student": str(REPO / student["model"])}
    fingerprint = {"models": models, "finished": [teacher.get("finished"), student.get("finished")]}
    if a.reuse and cache.exists():
        old = json.loads(cache.read_text())
        if old.get("fingerprint") == fingerprint:
            return old
    res = run_worker("speed", {"models": models, "test": data["test"]["path"], "batch_size": a.batch_size,
                               "runs": a.infer_runs}, a.out / "runs" / ds / "speed.log", env, timeout=3600)
    res.pop("_proc", None)
    res = dict(res, ratio=ratio(res["student"]["wps"], res["teacher"]["wps"]), fingerprint=fingerprint)
    cache.write_text(json.dumps(res, indent=1))
    return res


def stream_check(model: str, texts: Path, counts: List[int], out: Path, env: dict) -> dict:
    """The peak RSS of `spacy teacher-targets` with `model` on `counts`
    docs, each corpus the unlabelled texts repeated (a .txt file)."""
    lines = [json.loads(line)["text"].replace("\n", " ") for line in texts.read_text(encoding="utf8").splitlines()]
    runs = {}
    for n in counts:
        corpus = out / "stream" / f"{n}.txt"
        corpus.parent.mkdir(parents=True, exist_ok=True)
        with open(corpus, "w", encoding="utf8") as file:
            for i in range(n):
                file.write(lines[i % len(lines)] + "\n")
        targets = out / "stream" / f"targets_{n}"
        shutil.rmtree(targets, ignore_errors=True)
        log(f"stream check: teacher-targets on {n:,} docs ...")
        run = run_cmd([sys.executable, "-m", "spacy", "teacher-targets", REPO / model, corpus, targets],
                      out / "stream" / f"{n}.log", env=env, timeout=24 * 3600, cwd=REPO)
        disk = sum(f.stat().st_size for f in targets.rglob("*") if f.is_file())
        runs[n] = {"rc": run["rc"], "wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"], "disk_bytes": disk}
        corpus.unlink()
    first, last = runs[counts[0]], runs[counts[-1]]
    return {"model": model, "runs": runs, "peak_rss_ratio": ratio(last["peak_rss_mb"], first["peak_rss_mb"])}


def report(results: dict) -> List[str]:
    """The table and the targets, medians (range) over the students' seeds."""
    head = ["dataset", "teacher score", "teacher words/s", "gold-only student", "distilled student",
            "student words/s", "speed-up", "targets: stored", "bytes per doc"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines = []
    for ds, e in results["datasets"].items():
        keys = TASKS[e["task"]]["main"]
        teacher = {k: get_in(e, "teacher", "test", k) for k in keys}
        gold, dist = (get_in(e, "students", s, "summary") or {} for s in ("gold-only", "distilled"))
        speed = e.get("speed") or {}
        score = lambda s: ", ".join(f"{k} {fmt_spread(s.get(k), '.1f', 100)}" for k in keys)  # noqa: E731
        teacher_score = ", ".join(f"{k} {fmt(v, '.1f', 100)}" for k, v in teacher.items())
        rows.append(f"| {ds} | {teacher_score} | "
                    f"{fmt(get_in(speed, 'teacher', 'wps'), ',.0f')} | {score(gold)} | {score(dist)} | "
                    f"{fmt(get_in(speed, 'student', 'wps'), ',.0f')} | {fmt(speed.get('ratio'), '.1f')}x | "
                    f"{get_in(e, 'targets', 'unlabelled', 'docs')} docs | "
                    f"{fmt(get_in(e, 'targets', 'bytes_per_doc'), ',.0f')} |")
        if not dist.get("seeds_ok") or not gold.get("seeds_ok"):
            continue
        over_gold = {k: 100 * (get_in(dist, k, "median") - get_in(gold, k, "median")) for k in keys}
        to_teacher = {k: 100 * (get_in(dist, k, "median") - teacher[k]) for k in keys if teacher[k] is not None}
        met = all(v >= 1.0 for v in over_gold.values()) and all(v >= -1.5 for v in to_teacher.values())
        lines.append(f"- {ds}: distilled - gold-only {', '.join(f'{k} {v:+.1f}' for k, v in over_gold.items())} pt; "
                     f"distilled - teacher {', '.join(f'{k} {v:+.1f}' for k, v in to_teacher.items())} pt "
                     f"({'met' if met else 'not met'}); student {fmt(speed.get('ratio'), '.1f')}x the teacher's words/s")
    stream = results.get("stream")
    if stream:
        runs = ", ".join(f"{int(n):,} docs {r['peak_rss_mb']:,.0f} MB ({r['wall_s']:,.0f} s, "
                         f"{r['disk_bytes'] / 1e6:,.1f} MB on disk)" for n, r in stream["runs"].items())
        lines.append(f"- spacy teacher-targets peak RSS ({stream['model']}): {runs}; {stream['peak_rss_ratio']:.2f}x")
    return rows + [""] + lines


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--seeds", default="0,1,2", help="the students' seeds")
    p.add_argument("--teacher-seed", type=int, default=0)
    p.add_argument("--encoder", default=None, help="an all-MiniLM-L6-v2 directory (default: extract it)")
    p.add_argument("--teacher-out", default=str(REPO / "bench" / "results" / "transformer"),
                   help="bench/transformer.py's output directory: its splits, teachers and gold-only students")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "distill"))
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--unlabelled", type=int, default=UNLABELLED, help="unlabelled docs per dataset (imdb: 600)")
    p.add_argument("--stream-docs", default="", help="e.g. 10000,1000000: teacher scoring's peak RSS on that many docs")
    p.add_argument("--batch-size", type=int, default=64, help="nlp.pipe batch size")
    p.add_argument("--infer-runs", type=int, default=3)
    p.add_argument("--train-timeout", type=float, default=60 * 60)
    p.add_argument("--reuse", action="store_true", help="reuse finished runs with the same fingerprint")
    a = p.parse_args(argv)
    a.out, a.teacher_out = Path(a.out), Path(a.teacher_out)
    a.out.mkdir(parents=True, exist_ok=True)
    a.encoder = Path(a.encoder) if a.encoder else minilm_dir(a.teacher_out / "encoder")
    # bench/transformer.py's settings, so that its runs are reused.
    a.threads, a.evals_per_epoch, a.last_check = 1, 2, True
    a._versions = versions()
    env = child_env(1)
    seeds = [int(s) for s in a.seeds.split(",")]
    results: Dict[str, Any] = {"argv": qjoin(["python", "bench/distill.py"] + (argv or sys.argv[1:])),
                               "versions": a._versions, "epochs": EPOCHS, "encoder": str(a.encoder), "datasets": {}}
    datasets = [d for d in a.datasets.split(",") if d]
    for ds in datasets:
        task = DATASETS[ds]
        data = prepare(ds, Path(a.data_dir), a.teacher_out, env)
        entry = results["datasets"][ds] = {"task": task, "data": data, "students": {}}
        teacher = teacher_run(ds, task, data, a, env)
        entry["teacher"] = {k: teacher.get(k) for k in ("status", "model", "test", "infer", "train")}
        if teacher.get("status") != "ok":
            log(f"{ds}: no teacher ({teacher.get('status')}), skipped")
            continue
        entry["targets"] = score_unlabelled(ds, data, teacher, a, env)
        students = {"gold-only": (REPO / TASKS[task]["ours_cfg"]["efficiency"], a.teacher_out / "runs" / ds / "ours-efficiency", {}),
                    "distilled": (student_config(task, a.out, env), a.out / "runs" / ds / "distilled",
                                  {"paths.targets": entry["targets"]["targets"]})}
        for name, (cfg, sys_dir, overrides) in students.items():
            s_entry = entry["students"][name] = {"config": rel(cfg), "runs": {}}
            for seed in seeds:
                started = time.time()
                run_dir = sys_dir / f"seed{seed}"
                # A distilled student is reused only if it learned these very targets.
                mark = run_dir / "targets.sha256"
                if name == "distilled" and run_dir.exists() and not (
                        mark.exists() and mark.read_text() == entry["targets"]["sha256"]):
                    shutil.rmtree(run_dir)
                try:
                    run = run_system(ds, task, "ours-efficiency" if name == "gold-only" else name, cfg, data, EPOCHS,
                                     seed, a, run_dir, env, overrides=overrides)
                    if name == "distilled" and run_dir.exists():
                        mark.write_text(entry["targets"]["sha256"])
                except Exception as err:  # noqa: BLE001 - report and carry on
                    run = {"status": f"failed: {type(err).__name__}", "error_tail": str(err)[-2000:]}
                    log(f"{ds} / {name} / seed {seed}: FAILED: {err}")
                run["total_s"] = time.time() - started
                s_entry["runs"][str(seed)] = run
                s_entry["summary"] = summarize(task, s_entry["runs"])
                (a.out / "results.json").write_text(json.dumps(results, indent=1))
        student = next((r for r in entry["students"]["distilled"]["runs"].values() if r.get("status") == "ok"), None)
        if student:
            entry["speed"] = speed(ds, teacher, student, data, a, env)
        (a.out / "results.json").write_text(json.dumps(results, indent=1))
    counts = [int(n) for n in a.stream_docs.split(",") if n]
    first = next((e for e in results["datasets"].values() if e.get("targets")), None)
    student = next((r for r in (get_in(first, "students", "gold-only", "runs") or {}).values()
                    if r.get("status") == "ok"), None) if first else None
    if counts and student:
        texts = Path(first["targets"]["targets"]).parent / "unlabelled.jsonl"
        results["stream"] = stream_check(student["model"], texts, counts, a.out, env)
    (a.out / "results.json").write_text(json.dumps(results, indent=1))
    (a.out / "report.md").write_text("\n".join(report(results)) + "\n")
    log(f"done: {rel(a.out / 'results.json')}, {rel(a.out / 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
