#!/bin/bash
# TIPC basic chain for OrthoAD: train (fit + eval), eval, export, Paddle Inference.
# Usage: bash test_tipc/test_train_inference_python.sh CONFIG MODE
# Reads the 32-line key:value config (train_params / eval_params / infer_params); a value may be keyed by mode
# (lite_train_lite_infer=A|whole_train_whole_infer=B) and "|" lists values to sweep in inference.
FILENAME=$1
MODE=$2

line() { sed -n "${1}p" "${FILENAME}"; }
key() { line "$1" | cut -d ':' -f 1; }
value() {  # value of line $1 for the current mode
    local raw
    raw=$(line "$1" | cut -d ':' -f 2-)
    if [[ "${raw}" == *"${MODE}="* ]]; then
        echo "${raw}" | tr '|' '\n' | grep "^${MODE}=" | cut -d '=' -f 2-
    else
        echo "${raw}"
    fi
}

MODEL_NAME=$(value 2)
PYTHON=$(value 3)
DEVICE_ARG="$(key 5) $(value 5)"
OUTPUT_ARG="$(key 7) $(value 7)"
BATCH_ARG="$(key 8) $(value 8)"
WEIGHTS_ARG="$(key 9) $(value 9)"
DATA_ARG="$(key 11) $(value 11)"
TRAIN_CMD=$(value 14)
EVAL_CMD=$(value 17)
EXPORT_DIR_ARG="$(key 20) $(value 20)"
EXPORT_OUT_ARG="$(key 21) $(value 21)"
EXPORT_CMD=$(value 22)
INFER_CMD=$(value 26)
USE_GPU_KEY=$(key 27); USE_GPU_LIST=$(value 27)
INFER_BATCH_KEY=$(key 28); INFER_BATCH_LIST=$(value 28)
MODEL_DIR_ARG="$(key 29) $(value 29)"
INPUT_ARG="$(key 30) $(value 30)"
BENCHMARK_ARG="$(key 31) $(value 31)"

LOG_DIR=./test_tipc/output/${MODEL_NAME}/${MODE}
mkdir -p "${LOG_DIR}"
STATUS_LOG=${LOG_DIR}/results_python.log
: > "${STATUS_LOG}"
FAILED=0

run() {  # run "$1" (command), log to $2, record status
    local command=$1 log=$2
    eval "${command}" > "${log}" 2>&1
    if [ $? -eq 0 ]; then
        echo -e "\033[33m Run successfully with command - ${command}! \033[0m" | tee -a "${STATUS_LOG}"
    else
        echo -e "\033[33m Run failed with command - ${command}! \033[0m" | tee -a "${STATUS_LOG}"
        tail -n 20 "${log}"
        FAILED=1
    fi
}

run "${PYTHON} ${TRAIN_CMD} ${DATA_ARG} ${OUTPUT_ARG} ${BATCH_ARG} ${WEIGHTS_ARG} ${DEVICE_ARG}" "${LOG_DIR}/train.log"
run "${PYTHON} ${EVAL_CMD} ${DATA_ARG} ${OUTPUT_ARG} ${DEVICE_ARG}" "${LOG_DIR}/eval.log"
run "${PYTHON} ${EXPORT_CMD} ${EXPORT_OUT_ARG} ${EXPORT_DIR_ARG} ${DEVICE_ARG}" "${LOG_DIR}/export.log"
for use_gpu in ${USE_GPU_LIST//|/ }; do
    for batch in ${INFER_BATCH_LIST//|/ }; do
        run "${PYTHON} ${INFER_CMD} ${USE_GPU_KEY} ${use_gpu} ${INFER_BATCH_KEY} ${batch} ${MODEL_DIR_ARG} ${INPUT_ARG} ${BENCHMARK_ARG} --output_dir ${LOG_DIR}/infer_gpu_${use_gpu}_bs_${batch}" \
            "${LOG_DIR}/infer_gpu_${use_gpu}_bs_${batch}.log"
    done
done
exit ${FAILED}
