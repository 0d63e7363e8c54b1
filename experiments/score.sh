# Sourced by quality_default.sh and quality_longer.sh (needs $CD and $W): one model's test-set scores.
# score MODEL PREFIX SHAPE_DIR COLOR_DIR: zero-shot on both sets and a shape linear probe trained on the world's
# shape train split -> PREFIX-shape-zeroshot.json, PREFIX-color-zeroshot.json, PREFIX-shape-linear_probe.json;
# each skipped once written.
score() {
  $CD eval zeroshot --model $1 --data $3 --name shape --skip-existing --output $2-shape-zeroshot.json
  $CD eval zeroshot --model $1 --data $4 --name color --skip-existing --output $2-color-zeroshot.json
  $CD eval linear-probe --model $1 --train $W/classify/shape/train --data $3 --name shape \
    --skip-existing --output $2-shape-linear_probe.json
}
