#!/usr/bin/env bash
# TIPC basic chain for RD4AD: train -> eval -> export -> Paddle Inference over the device/oneDNN/thread matrix.
# Usage (from RD4AD-paddle/):
#   bash test_tipc/prepare.sh test_tipc/configs/RD4AD/train_infer_python.txt lite_train_lite_infer
#   bash test_tipc/test_train_inference_python.sh test_tipc/configs/RD4AD/train_infer_python.txt lite_train_lite_infer
# Each step prints "Run successfully with command - ..." or "Run failed with command - ..."; logs go to
# test_tipc/output/RD4AD/<mode>/ and the summary to results_python.log there. Exit status: number of failed steps.
set -uo pipefail
config=${1:?usage: test_train_inference_python.sh CONFIG MODE}
mode=${2:?usage: test_train_inference_python.sh CONFIG MODE}

# value SECTION KEY: the value of KEY in SECTION of the config, resolved for MODE ("a=1|b=2" -> the one for MODE)
value() {
  local raw
  raw=$(awk -v section="$1" -v key="$2" '
    /^=+.*_params=+$/ { current = $0; gsub(/=/, "", current); next }
    current == section && index($0, key ":") == 1 { print substr($0, length(key) + 2); exit }' "$config")
  if [[ "$raw" == *"="* ]]; then
    local choice
    for choice in ${raw//|/ }; do
      if [[ "$choice" == "$mode="* ]]; then echo "${choice#*=}"; return; fi
    done
    echo ""
  else
    echo "$raw"
  fi
}

model_name=$(value train_params model_name)
python=$(value train_params python)
log_dir="./test_tipc/output/${model_name}/${mode}"
mkdir -p "$log_dir"
summary="$log_dir/results_python.log"
: > "$summary"
failures=0

run() {  # run NAME COMMAND...: execute, log, report
  local name=$1; shift
  local log="$log_dir/${name}.log"
  "$@" > "$log" 2>&1
  local status=$?
  if [[ $status -eq 0 ]]; then
    echo "Run successfully with command - $*" | tee -a "$summary"
  else
    echo "Run failed with command - $*  (see $log)" | tee -a "$summary"
    failures=$((failures + 1))
  fi
}

common=(--cls "$(value train_params --cls)" --data_dir "$(value train_params --data_dir)"
        --output_dir "$(value train_params --output_dir)" --device "$(value train_params --device)")
train_options=()
for key in --epochs --batch_size --backbone --backbone_weights --image_size; do
  v=$(value train_params "$key"); [[ -n "$v" ]] && train_options+=("$key" "$v")
done

read -r -a train_cmd <<< "$(value train_params norm_train)"
run train "$python" "${train_cmd[@]}" "${common[@]}" "${train_options[@]}"

read -r -a eval_cmd <<< "$(value eval_params eval)"
run eval "$python" "${eval_cmd[@]}" "${common[@]}"

inference_dir=$(value export_params --save_inference_dir)
run export "$python" "$(value export_params norm_export)" "${common[@]}" --save_inference_dir "$inference_dir"

infer_script=$(value infer_params inference)
for use_mkldnn in $(value infer_params --use_mkldnn | tr '|' ' '); do
  for threads in $(value infer_params --threads | tr '|' ' '); do
    run "infer_cpu_mkldnn_${use_mkldnn}_threads_${threads}" "$python" "$infer_script" \
      --device "$(value infer_params --device)" --use_mkldnn "$use_mkldnn" --threads "$threads" \
      --batch_size "$(value infer_params --batch_size)" --model_dir "$(value infer_params --model_dir)" \
      --input "$(value infer_params --input)" --benchmark "$(value infer_params --benchmark)" \
      --output_dir "$log_dir/infer_mkldnn_${use_mkldnn}_threads_${threads}"
  done
done

echo "$failures failed step(s); summary in $summary"
exit "$failures"
