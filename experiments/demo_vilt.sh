#!/usr/bin/env bash
# The pretrained ViLT that `clipdistill demo` fine-tunes in its CLIP-TD part (shipped in
# src/clipdistill/world/pretrained/vilt-small-s0, see its README.md): how it was made, step by step, on the
# `small` world of seed 0 that the demo builds. ~2.5 h on 2 CPU cores. The runs are the vlpretrain runs 4-7 of
# benchmarks/RESULTS.md ("VL pretraining started from a CLIP's ViT tower"); float rounding differs between
# commits, so a rerun gives a model of the same recipe, not the same bytes.
#   bash experiments/demo_vilt.sh [WORK]          # WORK defaults to runs/demo_vilt; resumable stage by stage
set -euo pipefail
cd "$(dirname "$0")/.."
CD=${CD:-.venv/bin/clipdistill}
W=${1:-runs/demo_vilt}
D=$W/demo
mkdir -p "$W"

# 1. the demo's world, stand-in teacher, teacher features and balance (the whole demo; its later stages are unused)
[ -f $D/balance/kept_keys.txt ] || $CD demo --out $D

# 2. a CLIP-CID student whose image tower becomes the ViLT's: cd-student-s-32 without ln_pre (ViLT has none),
#    2 heads of 64, trained as the demo trains its CID student
cat > $W/vit-tower.json <<'EOF'
{"embed_dim": 128,
 "vision_cfg": {"image_size": 32, "patch_size": 4, "width": 128, "layers": 4, "head_width": 64, "no_ln_pre": true},
 "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 4}}
EOF
[ -f $W/vitclip/model.safetensors ] || $CD distill configs/cid.yaml --out $W/vitclip \
  --set data.source=world:$D/world --set data.batch_size=128 --set student.model=open_clip:$W/vit-tower.json \
  --set "teacher.models=[run:$D/teacher]" --set teacher.mode=cached --set teacher.features=$D/features \
  --set data.keep=$D/balance --set train.epochs=10 --set train.warmup=0.05

# 3. ViLT from that tower: ITM against random captions + MLM + ITC, 15 epochs (run 4)
[ -d $W/run4/hf ] || $CD vlpretrain configs/vlpretrain_init.yaml --set data.source=world:$D/world \
  --set student.init=run:$W/vitclip --set objectives.itc.weight=1.0 --set objectives.itm.negatives=random \
  --set train.epochs=15 --out $W/run4

# 4. then ITM against one-attribute swaps, to epoch 25 (run 5); 5. MLM on 25% of words at weight 3, to epoch 40
#    (run 6); 6. the same to epoch 60 (run 7). Each continues a copy of the previous folder.
continue_run() {  # FROM TO SETTINGS...
  local from=$1 to=$2; shift 2
  [ -f $to.done ] && return
  [ -d $to ] || cp -a $from $to
  $CD vlpretrain $to/config.yaml --out $to --resume latest "$@"
  touch $to.done
}
continue_run $W/run4 $W/run5 --set objectives.itm.negatives=swap --set train.epochs=25
continue_run $W/run5 $W/run6 --set objectives.mlm.rate=0.25 --set objectives.mlm.weight=3 --set train.epochs=40
continue_run $W/run6 $W/run7 --set train.epochs=60

# the shipped folder: the ViLT body, its tokenizer and image processor (the MLM / ITM heads stay behind)
mkdir -p $W/vilt-small-s0
for f in config.json model.safetensors preprocessor_config.json tokenizer.json tokenizer_config.json; do
  cp $W/run7/hf/$f $W/vilt-small-s0/
done
sha256sum $W/vilt-small-s0/model.safetensors
