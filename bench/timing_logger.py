"""The training logger `bench.TimingLogger.v1`: spaCy's console logger (same
console output) that also times the training loop, `nlp.update`, the dev
evaluations (`nlp.evaluate`) and the checkpoint saves (`nlp.to_disk`)
separately, so that train words/s leave out evaluating and saving. It writes
the timings and the peak RSS to the JSON file named by the environment
variable BENCH_TIMING_FILE, after every evaluation and at the end.

Loaded by spacy train, which the harness runs with
`--code bench/timing_logger.py --training.logger.@loggers bench.TimingLogger.v1`."""
import json
import os
import sys
import time
from pathlib import Path

from spacy.training.loggers import console_logger_v3
from spacy.util import registry

# spacy train imports this file by its path (--code), with bench/ not on sys.path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import vm_hwm_mb  # noqa: E402


@registry.loggers("bench.TimingLogger.v1")
def timing_logger(progress_bar=None, console_output=True, output_file=None):
    if progress_bar is False:
        progress_bar = None
    elif progress_bar is True:
        progress_bar = "eval"
    base = console_logger_v3(progress_bar=progress_bar, console_output=console_output,
                             output_file=output_file)

    def setup(nlp, stdout=sys.stdout, stderr=sys.stderr):
        log_step, finalize = base(nlp, stdout, stderr)
        path = os.environ.get("BENCH_TIMING_FILE")
        st = {"update_s": 0.0, "update_words": 0, "n_updates": 0, "eval_s": 0.0,
              "n_evals": 0, "save_s": 0.0, "n_saves": 0, "n_steps": 0,
              "loop_s": 0.0, "evals": []}
        t0 = time.perf_counter()
        orig_update, orig_eval, orig_save = nlp.update, nlp.evaluate, nlp.to_disk

        def update(examples, *args, **kwargs):
            examples = list(examples)
            t = time.perf_counter()
            r = orig_update(examples, *args, **kwargs)
            st["update_s"] += time.perf_counter() - t
            st["update_words"] += sum(len(eg) for eg in examples)
            st["n_updates"] += 1
            return r

        def timed(method, seconds_key, count_key):
            def call(*args, **kwargs):
                t = time.perf_counter()
                r = method(*args, **kwargs)
                st[seconds_key] += time.perf_counter() - t
                st[count_key] += 1
                return r

            return call

        nlp.update = update
        nlp.evaluate = timed(orig_eval, "eval_s", "n_evals")
        nlp.to_disk = timed(orig_save, "save_s", "n_saves")

        def dump():
            if path:
                st["peak_rss_mb"] = vm_hwm_mb()
                Path(path).write_text(json.dumps(st, indent=1))

        def step(info):
            st["n_steps"] += 1
            st["loop_s"] = time.perf_counter() - t0
            if info is not None:
                st["evals"].append({"epoch": info["epoch"], "step": info["step"],
                                    "score": info["score"], "words": info["words"],
                                    "t": st["loop_s"]})
                dump()
            log_step(info)

        def fin():
            finalize()
            dump()

        return step, fin

    return setup

