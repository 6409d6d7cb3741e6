#!/usr/bin/env bash
# TIPC basic chain shared by every method folder: train -> eval -> export -> Paddle Inference over a matrix.
#
#   cd METHOD-paddle
#   bash test_tipc/prepare.sh test_tipc/configs/NAME/train_infer_python.txt lite_train_lite_infer
#   bash test_tipc/test_train_inference_python.sh test_tipc/configs/NAME/train_infer_python.txt lite_train_lite_infer
#
# Config: sections `===...train_params...===`, `eval_params`, `export_params`, `infer_params` of `key:value` lines.
# A value may depend on the mode (`lite_train_lite_infer=A|whole_train_whole_infer=B`).
#   train_params: model_name, python, the command `norm_train:SCRIPT ARGS`, and `--option:value` lines. The
#                 options --cls --data_dir --output_dir --device are passed to train, eval and export; the others
#                 to train only.
#   eval_params:  `eval:SCRIPT ARGS` and its own `--option:value` lines; export_params likewise (`norm_export:`).
#   infer_params: `inference:SCRIPT` and `--option:value` lines; a value `a|b` (after the mode is resolved) is
#                 swept, every combination is one run with its own --output_dir.
# Each step prints "Run successfully with command - ..." or "Run failed with command - ..."; logs go to
# test_tipc/output/MODEL/MODE/ (or $TIPC_LOG_DIR) with the summary in results_python.log. Exit status: the number
# of failed steps.
set -uo pipefail
config=${1:?usage: test_train_inference_python.sh CONFIG MODE}
mode=${2:?usage: test_train_inference_python.sh CONFIG MODE}
[[ -f "$config" ]] || { echo "error: config not found: $config" >&2; exit 2; }
SHARED_KEYS=(--cls --data_dir --output_dir --device)

# entries SECTION: "key<TAB>raw value" lines of one section
entries() {
  awk -v section="$1" '
    /^=+.*_params=+$/ { current = $0; gsub(/=/, "", current); next }
    current == section && /^[^#].*:/ { i = index($0, ":"); print substr($0, 1, i - 1) "\t" substr($0, i + 1) }' "$config"
}

# resolve RAW: the part of a mode-keyed value for MODE ("a=1|b=2" -> 1); plain values unchanged
resolve() {
  local raw=$1 choice
  if [[ "$raw" == *"_infer="* ]]; then
    IFS='|' read -r -a choices <<< "$raw"
    for choice in "${choices[@]}"; do
      [[ "$choice" == "$mode="* ]] && { echo "${choice#*=}"; return; }
    done
    echo ""
  else
    echo "$raw"
  fi
}

value() {  # value SECTION KEY
  local key raw
  while IFS=$'\t' read -r key raw; do
    [[ "$key" == "$2" ]] && { resolve "$raw"; return; }
  done < <(entries "$1")
}

is_shared() { local k; for k in "${SHARED_KEYS[@]}"; do [[ "$1" == "$k" ]] && return 0; done; return 1; }

options() {  # options SECTION [shared|own]: "--key value" words of the section's --options, one per line
  local key raw v
  while IFS=$'\t' read -r key raw; do
    [[ "$key" == --* ]] || continue
    if [[ "${2:-own}" == shared ]]; then is_shared "$key" || continue; else is_shared "$key" && continue; fi
    v=$(resolve "$raw"); [[ -n "$v" && "$v" != null ]] && printf '%s\n%s\n' "$key" "$v"
  done < <(entries "$1")
}

model_name=$(value train_params model_name)
python=$(value train_params python)
log_dir="${TIPC_LOG_DIR:-./test_tipc/output/${model_name}/${mode}}"
mkdir -p "$log_dir"
summary="$log_dir/results_python.log"
: > "$summary"
failures=0

run() {  # run NAME COMMAND...: execute, log, report
  local name=$1; shift
  local log="$log_dir/${name}.log"
  "$@" > "$log" 2>&1
  if [[ $? -eq 0 ]]; then
    echo "Run successfully with command - $*" | tee -a "$summary"
  else
    echo "Run failed with command - $*  (see $log)" | tee -a "$summary"
    tail -n 5 "$log"
    failures=$((failures + 1))
  fi
}

mapfile -t shared < <(options train_params shared)
mapfile -t train_options < <(options train_params own)
read -r -a train_cmd <<< "$(value train_params norm_train)"
run train "$python" "${train_cmd[@]}" "${shared[@]}" "${train_options[@]}"

mapfile -t eval_options < <(options eval_params own)
read -r -a eval_cmd <<< "$(value eval_params eval)"
run eval "$python" "${eval_cmd[@]}" "${shared[@]}" "${eval_options[@]}"

mapfile -t export_options < <(options export_params own)
read -r -a export_cmd <<< "$(value export_params norm_export)"
export_shared=()  # export reads the trained model, not the data: every shared option but --data_dir
for ((i = 0; i < ${#shared[@]}; i += 2)); do
  [[ "${shared[i]}" == --data_dir ]] || export_shared+=("${shared[i]}" "${shared[i+1]}")
done
run export "$python" "${export_cmd[@]}" "${export_shared[@]}" "${export_options[@]}"

# inference: fixed options, and every combination of the swept ones
fixed=(); swept_keys=(); swept_values=()
while IFS=$'\t' read -r key raw; do
  [[ "$key" == --* ]] || continue
  v=$(resolve "$raw")
  if [[ "$v" == *"|"* ]]; then swept_keys+=("$key"); swept_values+=("$v"); else fixed+=("$key" "$v"); fi
done < <(entries infer_params)
read -r -a infer_cmd <<< "$(value infer_params inference)"

sweep() {  # sweep INDEX NAME ARGS...: recurse over the swept options
  local index=$1 name=$2; shift 2
  if (( index == ${#swept_keys[@]} )); then
    run "infer${name}" "$python" "${infer_cmd[@]}" "${fixed[@]}" "$@" --output_dir "$log_dir/infer${name}"
    return
  fi
  local key=${swept_keys[$index]} choice
  IFS='|' read -r -a choices <<< "${swept_values[$index]}"
  for choice in "${choices[@]}"; do
    sweep $((index + 1)) "${name}_${key#--}_${choice}" "$@" "$key" "$choice"
  done
}
sweep 0 ""

echo "$failures failed step(s); summary in $summary"
exit "$failures"
