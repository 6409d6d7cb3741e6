#!/usr/bin/env bash
# Quick start: synthetic MVTec-layout data, then for each of the four methods (RD4AD, KDAD, OrthoAD, EfficientAD):
# train -> eval -> predict -> export -> Paddle Inference, on tiny settings (small images and networks, resnet18/VGG16
# backbones, few steps), and the results tables. A few minutes on CPU.
#
#   bash scripts/quickstart.sh
#
# WEIGHTS (env): backbone weights, default "random" so that the quick start runs offline; "imagenet" downloads
# paddle.vision's ImageNet weights (needs internet), or give a .pdparams file. Scores on random weights only show that
# the pipeline runs; they are not the methods' accuracy.
# OUT (env): where data and outputs go, default output/quickstart in the repository.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
WEIGHTS="${WEIGHTS:-random}"
OUT="$(realpath -m "${OUT:-$repo/output/quickstart}")"
data="$OUT/data"
PYTHON="${PYTHON:-python}"

step() { printf '\n== %s\n' "$*"; }

step "synthetic data (bottle: object-like, carpet: texture-like, 64 px) -> $data"
rm -rf "$data"
"$PYTHON" -m common.synthetic --out "$data" --classes bottle,carpet --size 64 --n_train 24 --n_test_good 6 \
    --n_test_defect 3
"$PYTHON" -m common.check_dataset "$data"

# run_method FOLDER OUT TRAIN_OPTIONS...: train -> eval -> predict -> export -> Paddle Inference, in FOLDER
run_method() {
  local folder=$1 out=$2; shift 2
  (cd "$repo/$folder"
   "$PYTHON" main.py --mode train --cls bottle,carpet --data_dir "$data" --output_dir "$out" --seed 0 \
       --backbone_weights "$WEIGHTS" "$@"
   "$PYTHON" main.py --mode eval --cls bottle,carpet --data_dir "$data" --output_dir "$out"
   "$PYTHON" main.py --mode predict --cls bottle --input "$data/bottle/test/scratch" --output_dir "$out"
   "$PYTHON" export_model.py --cls bottle --output_dir "$out"
   "$PYTHON" infer.py --model_dir "$out/bottle/inference" --input "$data/bottle/test/scratch" \
       --output_dir "$out/bottle/infer" --benchmark True)
}

step "RD4AD (resnet18 teacher, 64 px, 3 epochs; the paper's setting is WRN50, 256 px, 200 epochs)"
rd="$OUT/rd4ad"
run_method RD4AD-paddle "$rd" --backbone resnet18 --image_size 64 --epochs 3 --batch_size 8

step "KDAD (VGG16 expert, 64 px, epochs 0..1; the paper's setting is 128 px, epochs 0..601)"
kd="$OUT/kdad"
run_method KDAD-paddle "$kd" --image_size 64 --epochs 1 --batch_size 8

step "OrthoAD (resnet18, k=32, 64 px; the paper's setting is WRN50, k=300, 256 px)"
od="$OUT/orthoad"
run_method OrthoAD-paddle "$od" --backbone resnet18 --k 32 --image_size 64 --pipeline simple

step "EfficientAD (PDN-S with widths / 16, a teacher distilled from resnet18 in 20 steps, 100 steps; the paper's
setting is the full PDN-S, a teacher distilled from WRN101 on ImageNet, 70,000 steps)"
ed="$OUT/efficientad"
run_method EfficientAD-paddle "$ed" --out_channels 16 --width_divisor 16 --teacher_weights distill \
    --backbone resnet18 --distill_steps 20 --distill_batch_size 2 --distill_norm_images 8 --train_steps 100 \
    --save_interval 100

step "results (percent; backbone weights: $WEIGHTS)"
for results in "$rd" "$kd" "$od" "$ed"; do
  "$PYTHON" "$repo/scripts/make_table.py" "$results/results"
done
echo "pictures and predictions.jsonl: $rd/bottle, $kd/bottle, $od/bottle, $ed/bottle"
