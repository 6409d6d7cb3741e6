#!/usr/bin/env bash
# TIPC basic chain (train -> eval -> export -> Paddle Inference); the runner is shared by every method folder:
# ../scripts/tipc/test_train_inference_python.sh documents the config format. Run from this method folder:
#   bash test_tipc/prepare.sh test_tipc/configs/*/train_infer_python.txt lite_train_lite_infer
#   bash test_tipc/test_train_inference_python.sh test_tipc/configs/*/train_infer_python.txt lite_train_lite_infer
exec bash "$(dirname "$0")/../../scripts/tipc/test_train_inference_python.sh" "$@"
