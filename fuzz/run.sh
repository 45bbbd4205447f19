#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for MINUTES each, then minimizes its corpus.
#
#   fuzz/run.sh MINUTES [TARGET...]        JOBS=2 fuzz/run.sh 10   (two targets at a time)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a C compiler. The toolchain is stable:
# RUSTC_BOOTSTRAP=1 lets it take the nightly flags libFuzzer needs, and `-s none` builds
# without a sanitizer (stable has none); release code (-O) without debug assertions, as in
# production (mail-parser has a debug_assert! that malformed MIME trips, see Cargo.toml).
# The corpus of each target is fuzz/corpus/<target>/ (seeds from seeds/make_seeds.py plus
# what the fuzzer found, minimized with -merge=1); crashes land in fuzz/artifacts/<target>/:
# copy each reproducer to fuzz/regressions/<target>/ so `cargo test` replays it.
set -euo pipefail
cd "$(dirname "$0")"
minutes=${1:?usage: fuzz/run.sh MINUTES [TARGET...]}
shift
jobs=${JOBS:-1}
export RUSTC_BOOTSTRAP=1
triple=$(rustc -vV | sed -n 's/^host: //p')
bin=target/$triple/release

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
python3 seeds/make_seeds.py
cargo fuzz build -s none -O
mkdir -p logs

run_one() {
    local t=$1 minutes=$2 bin=$3
    mkdir -p "corpus/$t" "artifacts/$t"
    local log=logs/$t.log start end
    start=$(date +%s)
    # -timeout: an input taking 10 s is a bug (parsers must be linear); -rss_limit_mb: so is
    # a process growing past 2 GiB. Keep going after a crash to find the next one.
    "$bin/$t" "corpus/$t" -max_total_time=$((minutes * 60)) -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 >"$log" 2>&1 || true
    end=$(date +%s)
    # Minimize: a small set of inputs that reaches every edge the whole corpus reaches.
    local tmp
    tmp=$(mktemp -d)
    if "$bin/$t" -merge=1 -set_cover_merge=1 -use_counters=0 -timeout=10 -rss_limit_mb=2048 "$tmp" "corpus/$t" >>"$log" 2>&1; then
        rm -rf "corpus/$t" && mv "$tmp" "corpus/$t"
    else
        rm -rf "$tmp"
    fi
    local execs crashes
    execs=$(grep -ho 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
    if [ "$execs" = 0 ]; then
        execs=$(grep -o '#[0-9]*' "$log" | tr -d '#' | sort -n | tail -1)
    fi
    crashes=$(find "artifacts/$t" -type f | wc -l)
    printf '%-16s %6ss %12s execs %5s corpus files %3s artifacts\n' "$t" "$((end - start))" \
        "${execs:-?}" "$(find "corpus/$t" -type f | wc -l)" "$crashes"
}
export -f run_one

printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {} "$minutes" "$bin"
