#!/bin/sh
# bench.sh — `make bench`: litevisor beside Litestream v0.3.13 (see bench/README.md).
#
#   scripts/bench.sh /abs/path/to/litevisor      (QUICK=1 in the environment: < 2 min)
#
# The harness is bench/run.py (Debian's python3, stdlib only); results go to
# bench/results/latest.md (+ PNG plots), scratch files to bench/work/.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 LITEVISOR_BINARY" >&2; exit 64; }
cd "$(dirname "$0")/.."
quick=""
case "${QUICK:-}" in ""|0|no|false) ;; *) quick="--quick" ;; esac
exec /usr/bin/python3 bench/run.py --bin "$1" $quick ${BENCH_ONLY:+--only "$BENCH_ONLY"}
