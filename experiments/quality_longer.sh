#!/usr/bin/env bash
# Longer student training on the `default` world (benchmarks/RESULTS.md, "Quality on the default world"):
# baseline, CLIP-CID on all the data (`cid_full`), CLIP-CID on the balanced subset (`cid`), CLIP-KD (`clipkd`) and
# TinyCLIP's logit distillation (`tinyclip`) for E epochs (default 6; quality_default.sh uses 3) against the teacher,
# feature store and balance output of quality_default.sh (run it first; `PREP_ONLY=1` stops it there). The default
# MODELS are baseline, cid_full and clipkd. Skips finished runs and evaluations.
# With `extra_test.py` (run here once per world) every model is also scored on 10x larger test sets -> eval_extra/.
# Balance controls: `cid_oracle` / `cid_random` train CID on kept-lists of
# the balance output's size from experiments/balance_truth.py --controls (one pair per planted group / uniform
# random); `cid_steps` trains CID on the balanced subset for as many steps as `cid_full` takes. `cid_full_mm`: CID on
# all the data with multimodal cluster labels (balance --labels multimodal), compared with `cid_full` on the shape
# *train* split (the dev set for preset choices). `cid_cap` / `cid_mmspace`: CID on
# two other balance settings; `cid_filter_random`: the random control drawn by `data.filter: random` (see below).
#   bash experiments/quality_longer.sh            # ~45 min on 2 CPU cores
#   SEED=1 MODELS="baseline cid_full" bash experiments/quality_longer.sh    # a second seed -> runs/q/rn_e6_seed1
#   EPOCHS=10 MODELS="baseline cid_full cid" bash experiments/quality_longer.sh  # the presets' own length -> runs/q/rn_e10
#   EPOCHS=10 MODELS="cid_oracle cid_random cid_steps" bash experiments/quality_longer.sh
#   EPOCHS=20 MODELS="cid_full cid" bash experiments/quality_longer.sh   # -> runs/q/rn_e20
#   EPOCHS=10 MODELS="cid_full cid_full_mm" DEV_ONLY=1 bash experiments/quality_longer.sh
#   Q=runs/q_dup EPOCHS=10 MODELS="baseline cid_full cid cid_steps" bash experiments/quality_longer.sh
#     (the redundant world of `Q=runs/q_dup DUP_RATE=0.4 PREP_ONLY=1 bash experiments/quality_default.sh`)
set -euo pipefail
cd "$(dirname "$0")/.."
CD=${CD:-.venv/bin/clipdistill}
Q=${Q:-runs/q}
E=${EPOCHS:-6}
W=$Q/world
K=$Q/rn
T=run:$K/teacher
SEED=${SEED:-0}
MODELS=${MODELS:-baseline cid_full clipkd}
O=$Q/rn_e$E$([ "$SEED" = 0 ] || echo _seed$SEED)
B=128
COMMON=(--set data.source=world:$W --set data.batch_size=$B --set train.progress=false --set data.num_workers=1)
CACHED=(--set teacher.mode=cached --set teacher.features=$K/features --set teacher.models=[$T])
S=(--set train.epochs=$E --set train.warmup_steps=50 --set train.seed=$SEED)

done_run() { [ -f "$1/model.safetensors" ]; }
# the larger test sets (4,000 shape / 5,000 colour images), written once per world
# (colour is written last, so its classnames.txt marks a complete set)
[ -f $Q/extra_test/color/classnames.txt ] || .venv/bin/python experiments/extra_test.py $W $Q/extra_test
source experiments/score.sh  # score MODEL PREFIX SHAPE_DIR COLOR_DIR
score_extra() { score $1 $2 $Q/extra_test/shape $Q/extra_test/color; }  # MODEL PREFIX
score_extra $T $K/eval_extra/teacher
want() { [[ " $MODELS " == *" $1 "* ]]; }
! want baseline || done_run $O/baseline || $CD distill configs/baseline.yaml --out $O/baseline "${COMMON[@]}" "${S[@]}"
! want cid_full || done_run $O/cid_full || $CD distill configs/cid.yaml --out $O/cid_full "${COMMON[@]}" "${S[@]}" "${CACHED[@]}" \
  --set data.keep=$K/balance --set data.filter=false
! want cid || done_run $O/cid || $CD distill configs/cid.yaml --out $O/cid "${COMMON[@]}" "${S[@]}" "${CACHED[@]}" \
  --set data.keep=$K/balance
# controls: the same CID recipe on other kept-lists of the same size, or on the kept-list for the full run's steps
for c in oracle random; do
  ! want cid_$c || [ -f $K/balance_$c/kept_keys.txt ] || .venv/bin/python experiments/balance_truth.py $W $K/balance --controls
  ! want cid_$c || done_run $O/cid_$c || $CD distill configs/cid.yaml --out $O/cid_$c "${COMMON[@]}" "${S[@]}" \
    "${CACHED[@]}" --set data.keep=$K/balance_$c
done
# balance variants, same CID recipe: `cid_cap` de-duplicates only near-copies (cosine > 0.999)
# and solves the cap instead of the threshold; `cid_mmspace` clusters and de-duplicates in the multimodal space
! want cid_cap || [ -f $K/balance_cap/kept_keys.txt ] || $CD balance --features $K/features --out $K/balance_cap \
  --clusters 256 --target-keep 0.563 --threshold 0.999
! want cid_mmspace || [ -f $K/balance_space_mm/kept_keys.txt ] || $CD balance --features $K/features \
  --out $K/balance_space_mm --clusters 256 --target-keep 0.563 --space multimodal
# `cid_filter_random`: the same-size uniform control drawn by distill itself (data.filter: random, seeded by train.seed)
! want cid_filter_random || done_run $O/cid_filter_random || $CD distill configs/cid.yaml --out $O/cid_filter_random \
  "${COMMON[@]}" "${S[@]}" "${CACHED[@]}" --set data.keep=$K/balance --set data.filter=random
for v in cap:balance_cap mmspace:balance_space_mm; do
  ! want cid_${v%%:*} || done_run $O/cid_${v%%:*} || $CD distill configs/cid.yaml --out $O/cid_${v%%:*} "${COMMON[@]}" \
    "${S[@]}" "${CACHED[@]}" --set data.keep=$K/${v#*:}
done
PAIRS=$(( $(wc -l < $W/pairs.csv) - 1 ))  # pairs.csv has a header line
FULL_STEPS=$(( E * (PAIRS / B) ))  # steps of a full-data run: the loader drops the last partial batch
! want cid_steps || done_run $O/cid_steps || $CD distill configs/cid.yaml --out $O/cid_steps "${COMMON[@]}" "${S[@]}" \
  "${CACHED[@]}" --set data.keep=$K/balance --set train.steps=$FULL_STEPS
! want cid_full_mm || [ -f $K/balance_mm/kept_keys.txt ] || $CD balance --features $K/features --out $K/balance_mm \
  --clusters 256 --target-keep 0.563 --labels multimodal
! want cid_full_mm || done_run $O/cid_full_mm || $CD distill configs/cid.yaml --out $O/cid_full_mm "${COMMON[@]}" \
  "${S[@]}" "${CACHED[@]}" --set data.keep=$K/balance_mm --set data.filter=false
! want clipkd || done_run $O/clipkd || $CD distill configs/clipkd.yaml --out $O/clipkd "${COMMON[@]}" "${S[@]}" "${CACHED[@]}"
! want tinyclip || done_run $O/tinyclip || $CD distill configs/tinyclip.yaml --out $O/tinyclip "${COMMON[@]}" "${S[@]}" \
  "${CACHED[@]}" --set student.model=open_clip:cd-student-s-32 --set student.init=scratch --set train.lr=1e-3
for m in $MODELS; do
  $CD eval zeroshot --model run:$O/$m --data $W/classify/shape/train --name shape_train --skip-existing \
    --output $O/eval_dev/$m-shape_train-zeroshot.json
  [ -z "${DEV_ONLY:-}" ] || continue
  score run:$O/$m $O/eval/$m $W/classify/shape/test $W/classify/color/test
  score_extra run:$O/$m $O/eval_extra/$m
done
