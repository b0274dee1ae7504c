#!/bin/bash
# Several exploration runs (bench/explore/run.sh), each for every seed:
#   bench/explore/sweep.sh RESULTS DATA EPOCHS "SEEDS" NAME:CFG:OVERRIDES ...
# appends one line of test scores per run to RESULTS, then DONE. Example:
#   bench/explore/sweep.sh results.txt goemo_sent 5 "0 1 2" \
#       "bag:configs/textcat.cfg:" "bigrams:configs/textcat.cfg:--components.torch_textcat.model.ngram_size 2"
R=$1; data=$2; ep=$3; seeds=$4; shift 4
here=$(dirname "$0")
for seed in $seeds; do
  for spec in "$@"; do
    IFS=: read -r name cfg overrides <<< "$spec"
    # shellcheck disable=SC2086  # the overrides are words
    EF=${EF:-100} "$here/run.sh" "$data.$name.s$seed" "$cfg" "$data" "$ep" --system.seed "$seed" $overrides >> "$R" 2>&1
  done
done
echo DONE >> "$R"
