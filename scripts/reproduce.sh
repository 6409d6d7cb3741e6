#!/usr/bin/env bash
# Full-protocol runs of one method over the MVTec AD classes, in parallel across GPUs, resumable; see reproduce.py.
#   scripts/reproduce.sh METHOD [--gpus 0,1,...] [--workers N] [--classes|--cls all|textures|objects|a,b] [-- TRAIN OPTIONS]
exec "${PYTHON:-python}" "$(dirname "$0")/reproduce.py" "$@"
