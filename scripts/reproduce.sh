#!/usr/bin/env bash
# Full-protocol runs of one method over every class of a benchmark (MVTec AD by default; --dataset for the others),
# in parallel across GPUs or CPU workers, resumable; see reproduce.py.
#   scripts/reproduce.sh METHOD [--dataset NAME] [--fold N] [--gpus 0,1,...] [--workers N] [--classes|--cls all|textures|objects|a,b] [-- TRAIN OPTIONS]
exec "${PYTHON:-python}" "$(dirname "$0")/reproduce.py" "$@"
