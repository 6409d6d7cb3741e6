#!/usr/bin/env bash
# Train then evaluate one method on each class, keep going when a class fails, then print the results table.
#
#   scripts/run_all.sh METHOD [CLASS|all|textures|objects ...] [-- EXTRA TRAINING OPTIONS]
#
#   METHOD: rd4ad | kdad | orthoad | efficientad, or the path of a method folder
#   DATA_DIR   (env) MVTec AD root, default: data/mvtec_anomaly_detection in the repository
#   OUTPUT_DIR (env) default: output/METHOD in the repository; results land in OUTPUT_DIR/results
#   LOG_DIR    (env) default: logs/METHOD in the repository
#   PYTHON     (env) default: python
#
# Logs: LOG_DIR/CLASS_train.log and LOG_DIR/CLASS_eval.log. Exit status 1 when any class failed.
set -u
repo="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -ge 1 ] || { echo "usage: $0 METHOD [CLASS ...] [-- EXTRA ARGS]" >&2; exit 2; }
method="$(echo "$1" | tr '[:upper:]' '[:lower:]')"
if [ -f "$1/main.py" ]; then   # a method folder given by path
  folder="$(cd "$1" && pwd)"; method="$(basename "$folder" | sed 's/-paddle$//' | tr '[:upper:]' '[:lower:]')"
  shift
else
shift
case "$method" in
  rd4ad|rd4ad-paddle) folder=RD4AD-paddle ;;
  kdad|mkd|kdad-paddle) folder=KDAD-paddle ;;
  orthoad|padim|orthoad-paddle) folder=OrthoAD-paddle ;;
  efficientad|efficientad-paddle) folder=EfficientAD-paddle ;;
  *) echo "error: unknown method '$method' (rd4ad, kdad, orthoad, efficientad)" >&2; exit 2 ;;
esac
folder="$repo/$folder"
fi
[ -f "$folder/main.py" ] || { echo "error: $folder/main.py not found" >&2; exit 2; }

classes=(); extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  classes+=("$1"); shift
done
[ ${#classes[@]} -gt 0 ] || classes=(all)
textures="carpet grid leather tile wood"
objects="bottle cable capsule hazelnut metal_nut pill screw toothbrush transistor zipper"
expanded=()
for c in "${classes[@]}"; do
  case "$c" in
    all) expanded+=($textures $objects) ;;
    textures) expanded+=($textures) ;;
    objects) expanded+=($objects) ;;
    *) expanded+=("$c") ;;
  esac
done

PYTHON="${PYTHON:-python}"
DATA_DIR="$(realpath -m "${DATA_DIR:-$repo/data/mvtec_anomaly_detection}")"
OUTPUT_DIR="$(realpath -m "${OUTPUT_DIR:-$repo/output/$method}")"
logs="$(realpath -m "${LOG_DIR:-$repo/logs/$method}")"
mkdir -p "$logs" "$OUTPUT_DIR"
failed=()
for cls in "${expanded[@]}"; do
  for mode in train eval; do
    log="$logs/${cls}_${mode}.log"
    echo "[$cls] $mode ... (log: $log)"
    options=()  # EXTRA ARGS are training options (eval takes its settings from the trained model)
    [ "$mode" = train ] && options=("${extra[@]}")
    if ! (cd "$folder" && "$PYTHON" main.py --mode "$mode" --cls "$cls" --data_dir "$DATA_DIR" \
          --output_dir "$OUTPUT_DIR" "${options[@]}") >"$log" 2>&1; then
      echo "[$cls] $mode FAILED: $(tail -n 1 "$log")" >&2
      failed+=("$cls:$mode")
      break
    fi
  done
done

if [ -d "$OUTPUT_DIR/results" ]; then
  "$PYTHON" "$repo/scripts/make_table.py" "$OUTPUT_DIR/results"
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
echo "all ${#expanded[@]} classes done"
