#!/usr/bin/env bash
# Runs the README's test command (`cargo test --workspace --release`) several times in
# a row and counts the green runs: the suite must pass every time, on a quiet machine
# and on a loaded one.
#
#   scripts/test-loop.sh [RUNS] [--load]
#
# RUNS defaults to 10. With --load, one busy loop per core (`yes > /dev/null`) keeps
# every core loaded for the whole time. Each run's output goes to
# target/test-loop/run-N.log; the last line says how many passed and failed, and the
# exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=10
load=0
for arg in "$@"; do
    case "$arg" in
        --load) load=1 ;;
        ''|*[!0-9]*) echo "usage: $0 [RUNS] [--load]" >&2; exit 2 ;;
        *) runs=$arg ;;
    esac
done
[ "$runs" -ge 1 ] || { echo "usage: $0 [RUNS] [--load]" >&2; exit 2; }

# Build once, so that the runs measure the tests, not the compiler (and before
# anything else creates target/, so that cargo lays it out as usual).
build_log=$(mktemp)
cargo test --workspace --release --no-run >"$build_log" 2>&1 || {
    cat "$build_log" >&2
    echo "build failed" >&2
    exit 1
}
rm -f "$build_log"
logs=target/test-loop
mkdir -p "$logs"

hogs=()
stop_hogs() {
    for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null; done
    hogs=()
}
trap stop_hogs EXIT
if [ "$load" = 1 ]; then
    for _ in $(seq "$(nproc)"); do
        yes >/dev/null &
        hogs+=("$!")
    done
    echo "load: ${#hogs[@]} busy loops (yes > /dev/null)"
fi

passed=0
failed=0
for i in $(seq "$runs"); do
    start=$(date +%s)
    if cargo test --workspace --release >"$logs/run-$i.log" 2>&1; then
        passed=$((passed + 1))
        verdict=ok
    else
        failed=$((failed + 1))
        verdict="FAILED (see $logs/run-$i.log)"
    fi
    tests=$(grep -o '^test result: ok. [0-9]* passed' "$logs/run-$i.log" |
        awk '{ n += $4 } END { print n + 0 }')
    echo "run $i/$runs: $verdict, $tests tests passed, $(($(date +%s) - start)) s, load $(cut -d' ' -f1-3 /proc/loadavg)"
done
stop_hogs
echo "test-loop: $passed passed, $failed failed"
[ "$failed" = 0 ]
