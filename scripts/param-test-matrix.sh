#!/usr/bin/env bash
# The full-size rseq stress matrix: `rseq param-test` as the reference driver
# (librseq's tests/run_param_test.tap) runs param_test, at its size.
#
#   every test type (s, l, b, b -M, m, m -M, i, r)
#   x 37 configurations: defaults; each injection point 1-9 at 10000 loops; points
#     7-9 at -1 with yield, signal (kill) and 1 ms sleep every 4th, 2nd, 1st time
#   x the reference's 4 builds: plain, --compare-twice, --mm-cid, both
#   with 1000 repetitions and 6 x nproc threads: 1,184 runs;
#   then the same 1,184 under GLIBC_TUNABLES=glibc.pthread.rseq=0 with -D 3
#   (library-owned registration, every third thread without rseq): 2,368 runs.
#
# Prints one TAP line per run ("ok N - ...", "not ok N - ...", "ok N # skip ..." for
# an mm_cid run where mm_cid is unavailable) and a summary with counts and elapsed
# time; exits 1 if any run failed. The stderr of failed runs is echoed as TAP
# diagnostics.
#
# Usage: scripts/param-test-matrix.sh [extra param-test args...]
# Environment: REPS (default 1000), THREADS (default 6 x nproc), RSEQ (a prebuilt
# `rseq` binary; default: build it with `cargo build --release`), PASSES ("default
# tunable" by default; "default" or "tunable" to run one pass).
# On a 2-core machine both passes took 26 min 41 s (2,368 runs; about half per pass).
set -uo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-1000}
THREADS=${THREADS:-$((6 * $(nproc)))}
PASSES=${PASSES:-default tunable}
EXTRA_ARGS=("$@")

if [ -z "${RSEQ:-}" ]; then
    cargo build --release -q -p restartable-cli || exit 1
    target=${CARGO_TARGET_DIR:-target}
    RSEQ="$target/release/rseq"
fi
[ -x "$RSEQ" ] || { echo "no rseq binary at $RSEQ" >&2; exit 1; }

TYPES=("s" "l" "b" "b -M" "m" "m -M" "i" "r")
TYPE_NAMES=("spinlock" "list" "buffer" "buffer with barrier" "memcpy" "memcpy with barrier"
    "increment" "membarrier")
BUILDS=("" "--compare-twice" "--mm-cid" "--mm-cid --compare-twice")
BUILD_NAMES=("" "compare-twice " "mm_cid " "compare-twice mm_cid ")

CONFIGS=("")
for p in 1 2 3 4 5 6 7 8 9; do CONFIGS+=("-$p 10000"); done
for ev in "-y" "-k" "-s 1"; do
    for m in 4 2 1; do
        for p in 7 8 9; do CONFIGS+=("-$p -1 -m $m $ev"); done
    done
done

n=0 passed=0 failed=0 skipped=0
start=$(date +%s)
errfile=$(mktemp)
trap 'rm -f "$errfile"' EXIT

total=$(( ${#CONFIGS[@]} * ${#TYPES[@]} * ${#BUILDS[@]} * $(wc -w <<<"$PASSES") ))
echo "1..$total"
echo "# rseq param-test matrix: $REPS reps, $THREADS threads, $(nproc) CPUs, passes: $PASSES"

for pass in $PASSES; do
    case "$pass" in
        default) env_args=(env -u GLIBC_TUNABLES); pass_args=(); pass_name="" ;;
        tunable) env_args=(env GLIBC_TUNABLES=glibc.pthread.rseq=0); pass_args=(-D 3)
                 pass_name="tunable-off -D 3 " ;;
        *) echo "unknown pass $pass" >&2; exit 1 ;;
    esac
    "${env_args[@]}" "$RSEQ" param-test -c
    rseq_skip=$?
    [ $rseq_skip -eq 2 ] && echo "# rseq unavailable in pass $pass: skipping its runs"
    "${env_args[@]}" "$RSEQ" param-test -c --mm-cid
    mm_cid_skip=$?
    for config in "${CONFIGS[@]}"; do
        echo "# ${pass_name}configuration: ${config:-defaults}"
        for t in "${!TYPES[@]}"; do
            for b in "${!BUILDS[@]}"; do
                n=$((n + 1))
                # shellcheck disable=SC2206 # word splitting of the option strings is meant
                args=(-T ${TYPES[$t]} $config ${BUILDS[$b]} "${pass_args[@]}"
                    -r "$REPS" -t "$THREADS" "${EXTRA_ARGS[@]}")
                desc="Running ${pass_name}${BUILD_NAMES[$b]}test ${TYPE_NAMES[$t]} ${config}"
                if [ $rseq_skip -eq 2 ]; then
                    skipped=$((skipped + 1))
                    echo "ok $n # skip $desc (rseq unavailable)"
                    continue
                fi
                "${env_args[@]}" "$RSEQ" param-test "${args[@]}" 2>"$errfile" >/dev/null
                rc=$?
                if [ $rc -eq 0 ]; then
                    passed=$((passed + 1))
                    echo "ok $n - $desc"
                elif [ $rc -eq 2 ] && [[ "${BUILDS[$b]}" == *--mm-cid* ]] && [ $mm_cid_skip -eq 2 ]; then
                    skipped=$((skipped + 1))
                    echo "ok $n # skip $desc (mm_cid unavailable)"
                else
                    failed=$((failed + 1))
                    echo "not ok $n - $desc (exit $rc)"
                    echo "#   rseq param-test ${args[*]}"
                    sed 's/^/#   /' "$errfile" | tail -n 20
                fi
            done
        done
    done
done

elapsed=$(( $(date +%s) - start ))
echo "# $n runs: $passed passed, $failed failed, $skipped skipped in $((elapsed / 60)) min $((elapsed % 60)) s"
[ "$failed" -eq 0 ]
