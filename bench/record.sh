#!/usr/bin/env bash
# `bench/record.sh NAME PROGRAM [ARGS...]`: runs one figure program and keeps its raw output
# in bench/results/<UTC time>-NAME.txt with the date, machine, hermod commit and command (see
# `record` in bench/lib.sh; the comparison scripts use the same). For example:
#   bench/record.sh store target/release/examples/store_bench
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
record "$@"
