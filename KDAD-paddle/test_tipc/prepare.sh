#!/usr/bin/env bash
# Data for a TIPC mode (lite: seeded synthetic data; whole: MVTec AD you provide); shared runner in ../scripts/tipc.
exec bash "$(dirname "$0")/../../scripts/tipc/prepare.sh" "$@"
