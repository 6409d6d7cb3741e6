#!/bin/bash
# Prepare data for a TIPC mode.  Usage: bash test_tipc/prepare.sh CONFIG MODE
# lite_train_lite_infer: a small synthetic MVTec-layout dataset (bottle), generated deterministically.
# whole_train_whole_infer: expects MVTec AD at test_tipc/data/mvtec_anomaly_detection (link it there).
set -e
FILENAME=$1
MODE=$2
if [ "${MODE}" = "lite_train_lite_infer" ]; then
    rm -rf ./test_tipc/data/lite
    python3 -m common.synthetic --out ./test_tipc/data/lite --classes bottle --size 64 --n_train 20 \
        --n_test_good 4 --n_test_defect 2
elif [ "${MODE}" = "whole_train_whole_infer" ]; then
    if [ ! -d ./test_tipc/data/mvtec_anomaly_detection/bottle ]; then
        echo "link MVTec AD to ./test_tipc/data/mvtec_anomaly_detection first" >&2
        exit 1
    fi
else
    echo "unsupported mode ${MODE} (lite_train_lite_infer or whole_train_whole_infer)" >&2
    exit 1
fi
