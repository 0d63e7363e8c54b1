#!/usr/bin/env bash
# The CLIP-to-CLIP quality table (benchmarks/RESULTS.md "Quality on the default world", README "Results"):
# the default world, the ResNet stand-in teacher, then every student of the table at 10 epochs with the seeds
# listed there, each scored on the 4,000-image shape and 5,000-image colour sets, then the table itself.
# Resumable (finished runs and scores are skipped). Each student takes 15-35 min on 2 CPU cores, so the whole
# table is a day of CPU; on a GPU, minutes per run. The teacher is one 4-epoch draw: another draw of the same
# recipe moves the "gap closed" column (RESULTS.md says by how much).
#   bash experiments/table_quality.sh
#   Q=runs/q_dup DUP_RATE=0.4 bash experiments/table_quality.sh    # the more redundant world
set -euo pipefail
cd "$(dirname "$0")/.."
PREP_ONLY=1 bash experiments/quality_default.sh          # world, teacher, feature store, balance, teacher scores
students() { SEED=$1 EPOCHS=10 MODELS="$2" bash experiments/quality_longer.sh; }
for s in 0 1 2 3; do students $s "baseline cid_full"; done
for s in 0 1 2; do students $s "cid cid_steps"; done
for s in 0 1; do students $s "clipkd tinyclip cid_random"; done
.venv/bin/python experiments/seeds_table.py "${Q:-runs/q}" --compare cid:cid_full --compare cid_steps:cid_full \
  --compare cid_random:cid_full --compare cid:cid_random
