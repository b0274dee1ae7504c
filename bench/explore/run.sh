#!/bin/bash
# One exploration run (docs/benchmarks.md, how the presets were chosen): train CFG on the
# subsampled set DATA (bench/explore/prep.py) for EPOCHS epochs, one torch
# thread, niced; evaluate model-best on its test split; print the scores.
# usage: bench/explore/run.sh NAME CFG DATA EPOCHS [spacy train overrides...]
# env: EF (eval_frequency, default 100), PY (python), EXPLORE_OUT, CODE (--code file)
name=$1; cfg=$2; data=$3; ep=$4; shift 4
P=${PY:-.venv/bin/python}
OUT=${EXPLORE_OUT:-bench/results/explore}
D=$OUT/data/$data; O=$OUT/runs/$name
rm -rf "$O"; mkdir -p "$O"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
t0=$(date +%s)
CODE_ARGS=(); [ -n "$CODE" ] && CODE_ARGS=(--code "$CODE")
nice -n 10 $P -m spacy train "$cfg" "${CODE_ARGS[@]}" --output "$O/train" --paths.train "$D/train.spacy" --paths.dev "$D/dev.spacy" \
  --training.max_epochs "$ep" --training.max_steps 0 --training.patience 0 --training.eval_frequency "${EF:-100}" "$@" \
  > "$O/train.log" 2>&1 || { echo "$name FAILED"; tail -5 "$O/train.log"; exit 1; }
t1=$(date +%s)
nice -n 10 $P -m spacy evaluate "$O/train/model-best" "$D/test.spacy" "${CODE_ARGS[@]}" --output "$O/scores.json" > "$O/eval.log" 2>&1
$P - "$O" "$name" $((t1-t0)) <<'PY'
import json, sys
o, name, t = sys.argv[1:]
s = json.load(open(o + "/scores.json"))
keys = ["ents_f", "cats_score", "cats_macro_f", "cats_macro_auc", "cats_micro_f"]
print(name, "train_s=" + t, " ".join(f"{k}={s[k]:.4f}" for k in keys if s.get(k) is not None), flush=True)
PY
