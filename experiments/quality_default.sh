#!/usr/bin/env bash
# Quality runs on the `default` embedded world (benchmarks/RESULTS.md "Quality on the default world").
# Resumable: a stage whose output exists is skipped. Hours on 2 CPU cores; minutes on a GPU.
#   bash experiments/quality_default.sh            # everything, ResNet stand-in teacher, under runs/q/rn
#   TEACHER_ARCH=cd-teacher-64 TEACHER_BATCH=128 K=runs/q bash experiments/quality_default.sh
#     (the ViT teacher of the first table)
#   PREP_ONLY=1 bash experiments/quality_default.sh   # world, teacher, embed, balance, the teacher's scores only
#     (what quality_longer.sh needs)
#   Q=runs/q_dup DUP_RATE=0.4 bash experiments/quality_default.sh   # a more redundant world
set -euo pipefail
cd "$(dirname "$0")/.."
CD=${CD:-.venv/bin/clipdistill}
Q=${Q:-runs/q}
W=$Q/world                             # shared by every teacher
TA=${TEACHER_ARCH:-cd-teacher-rn-64}
K=${K:-$Q/rn}                          # everything that depends on the teacher (and the baseline beside it)
T=run:$K/teacher
E=${EPOCHS:-3}
TE=${TEACHER_EPOCHS:-4}
TB=${TEACHER_BATCH:-256}
COMMON=(--set data.source=world:$W --set data.batch_size=128 --set train.progress=false --set data.num_workers=1)

done_run() { [ -f "$1/model.safetensors" ]; }
[ -f $W/world.json ] || $CD world --out $W --size default --seed 0 ${DUP_RATE:+--dup-rate $DUP_RATE}
done_run $K/teacher || $CD distill configs/baseline.yaml --out $K/teacher "${COMMON[@]}" \
  --set student.model=open_clip:$TA --set train.epochs=$TE --set train.warmup_steps=50 --set data.batch_size=$TB
[ -f $K/features/manifest.json ] || $CD embed --teacher $T --data world:$W --out $K/features
[ -f $K/balance/kept_keys.txt ] || $CD balance --features $K/features --out $K/balance --clusters 256 --target-keep 0.563

source experiments/score.sh
# test-split scores of one model of $K (zero-shot shape / colour, shape linear probe), skipped once written
score_test() { score run:$K/$1 $K/eval/$1 $W/classify/shape/test $W/classify/color/test; }
score_test teacher
$CD eval zeroshot --model $T --data $W/classify/shape/train --name shape_train --skip-existing \
  --output $K/eval_dev/teacher-shape_train-zeroshot.json
[ -z "${PREP_ONLY:-}" ] || exit 0

# students: same architecture (cd-student-s-32), epochs and batch; teachers read from the feature store
CACHED=(--set teacher.mode=cached --set teacher.features=$K/features --set teacher.models=[$T])
S=(--set train.epochs=$E --set train.warmup_steps=50)
done_run $K/baseline || $CD distill configs/baseline.yaml --out $K/baseline "${COMMON[@]}" "${S[@]}"
done_run $K/cid || $CD distill configs/cid.yaml --out $K/cid "${COMMON[@]}" "${S[@]}" "${CACHED[@]}" \
  --set data.keep=$K/balance
# cid on all the data (cluster labels still from the balance output, nothing dropped): the balance ablation
done_run $K/cid_full || $CD distill configs/cid.yaml --out $K/cid_full "${COMMON[@]}" "${S[@]}" "${CACHED[@]}" \
  --set data.keep=$K/balance --set data.filter=false
done_run $K/clipkd || $CD distill configs/clipkd.yaml --out $K/clipkd "${COMMON[@]}" "${S[@]}" "${CACHED[@]}"
done_run $K/tinyclip || $CD distill configs/tinyclip.yaml --out $K/tinyclip "${COMMON[@]}" "${S[@]}" "${CACHED[@]}" \
  --set student.model=open_clip:cd-student-s-32 --set student.init=scratch --set train.lr=1e-3

for m in baseline cid cid_full clipkd tinyclip; do score_test $m; done
$CD eval build $K/eval --out $K/eval_table.csv
$CD report $K/eval $K/baseline $K/cid $K/balance --out $K/report --teacher $T --baseline run:$K/baseline
# The CLIP-TD cells with this teacher: bash experiments/quality_td.sh
