#!/usr/bin/env bash
# Quality runs on the `default` embedded world (the figures in benchmarks/RESULTS.md "Quality").
# Resumable: a stage whose output exists is skipped. Hours on 2 CPU cores; minutes on a GPU.
#   bash benchmarks/quality_default.sh            # everything
#   EPOCHS=5 TEACHER_EPOCHS=4 bash benchmarks/quality_default.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CD=${CD:-.venv/bin/clipdistill}
Q=${Q:-runs/q}
W=$Q/world
T=run:$Q/teacher
E=${EPOCHS:-5}
TE=${TEACHER_EPOCHS:-4}
COMMON=(--set data.source=world:$W --set data.batch_size=128 --set train.progress=false --set data.num_workers=1)

done_run() { [ -f "$1/model.safetensors" ]; }
[ -f $W/world.json ] || $CD world --out $W --size default --seed 0
done_run $Q/teacher || $CD distill configs/baseline.yaml --out $Q/teacher "${COMMON[@]}" \
  --set student.model=open_clip:cd-teacher-64 --set train.epochs=$TE --set train.warmup_steps=50
[ -f $Q/features/manifest.json ] || $CD embed --teacher $T --data world:$W --out $Q/features
[ -f $Q/balance/kept_keys.txt ] || $CD balance --features $Q/features --out $Q/balance --clusters 256 --target-keep 0.563

# students: same architecture (cd-student-s-32), epochs and batch; teachers read from the feature store
CACHED=(--set teacher.mode=cached --set teacher.features=$Q/features --set teacher.models=[$T])
S=(--set train.epochs=$E --set train.warmup_steps=50)
done_run $Q/baseline || $CD distill configs/baseline.yaml --out $Q/baseline "${COMMON[@]}" "${S[@]}"
done_run $Q/cid || $CD distill configs/cid.yaml --out $Q/cid "${COMMON[@]}" "${S[@]}" "${CACHED[@]}" \
  --set data.keep=$Q/balance
# cid on all the data (cluster labels still from the balance output, nothing dropped): the balance ablation
done_run $Q/cid_full || $CD distill configs/cid.yaml --out $Q/cid_full "${COMMON[@]}" "${S[@]}" "${CACHED[@]}" \
  --set data.keep=$Q/balance --set data.filter=false
done_run $Q/clipkd || $CD distill configs/clipkd.yaml --out $Q/clipkd "${COMMON[@]}" "${S[@]}" "${CACHED[@]}"
done_run $Q/tinyclip || $CD distill configs/tinyclip.yaml --out $Q/tinyclip "${COMMON[@]}" "${S[@]}" "${CACHED[@]}" \
  --set student.model=open_clip:cd-student-s-32 --set student.init=scratch --set train.lr=1e-3

for m in teacher baseline cid cid_full clipkd tinyclip; do
  spec=run:$Q/$m
  for set in shape color; do
    $CD eval zeroshot --model $spec --data $W/classify/$set/test --name $set --skip-existing \
      --output $Q/eval/$m-$set-zeroshot.json
  done
  $CD eval linear-probe --model $spec --train $W/classify/shape/train --data $W/classify/shape/test --name shape \
    --skip-existing --output $Q/eval/$m-shape-linear_probe.json
done
$CD eval build $Q/eval --out $Q/eval_table.csv

# CLIP-TD protocol (our reconstruction) on the three tasks, low-shot x 3 seeds, shift splits, full data
$CD protocol configs/td/protocol_default.yaml --set world=$W --set teacher=$T --set out=$Q/protocol
$CD report $Q/eval $Q/baseline $Q/cid $Q/balance $Q/protocol --out $Q/report --teacher $T --baseline run:$Q/baseline
