#!/usr/bin/env bash
# Installs what is missing, builds, and runs the test suite with ctest.
#
#   scripts/test.sh         build/        all tests
#   scripts/test.sh asan    build-asan/   all tests, AddressSanitizer + UBSan
#   scripts/test.sh tsan    build-tsan/   tests labelled 'concurrency', TSan
#   scripts/test.sh fuzz    build-fuzz/   libFuzzer targets, CHUNKD_FUZZ_SECONDS
#                                         (60) each, through scripts/fuzz.sh
#   scripts/test.sh bench   build-bench/  scripts/bench.sh --quick: every
#                                         benchmark workload once, tiny sizes,
#                                         checked for function, not speed
#   scripts/test.sh all     the five above, one after the other
#
# Each build folder has its own test stack (tests/integration/stack.cmake) on
# its own ports, started and stopped by ctest itself: Redis 16390, 16391,
# 16392 and MariaDB 13390, 13391, 13392 for normal, asan and tsan. To run
# beside another checkout, move them with CHUNKD_TEST_REDIS_PORT and
# CHUNKD_TEST_MYSQL_PORT (the normal ports; asan and tsan take the next two).
# The exit status is 0 only if every selected test passed; each fuzz target
# and each benchmark workload run counts as one test.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STACK=$CHUNKD_ROOT/scripts/stack.sh
REDIS_BASE=${CHUNKD_TEST_REDIS_PORT:-16390}
MYSQL_BASE=${CHUNKD_TEST_MYSQL_PORT:-13390}
[[ $REDIS_BASE =~ ^[0-9]+$ && $MYSQL_BASE =~ ^[0-9]+$ ]] ||
    die "CHUNKD_TEST_REDIS_PORT and CHUNKD_TEST_MYSQL_PORT must be port numbers"
TOTAL_PASSED=0
TOTAL_FAILED=0
declare -a SUMMARY=()

# run_mode MODE: builds that mode's folder and runs its tests; non-zero on any
# failure, after recording the counts for the summary.
run_mode() {
    local mode=$1 dir sanitize offset redis_port mysql_port
    local -a select=()
    case $mode in
    normal) dir=build sanitize='' offset=0 ;;
    asan) dir=build-asan sanitize=address,undefined offset=1 ;;
    tsan)
        dir=build-tsan sanitize=thread offset=2
        select=(-L concurrency)
        ;;
    esac
    redis_port=$((REDIS_BASE + offset)) mysql_port=$((MYSQL_BASE + offset))
    dir=$CHUNKD_ROOT/$dir
    # A failed build fails this mode only, so 'all' still tries the others.
    if ! (cmake_build "$dir" -DCHUNKD_SANITIZE="$sanitize" \
        -DCHUNKD_TEST_REDIS_PORT="$redis_port" -DCHUNKD_TEST_MYSQL_PORT="$mysql_port"); then
        SUMMARY+=("$mode: build failed")
        TOTAL_FAILED=$((TOTAL_FAILED + 1))
        return 1
    fi
    log "$mode: running tests in $dir"
    local out=$dir/ctest-$mode.log rc=0
    (cd "$dir" && ctest --output-on-failure --no-tests=error --timeout 900 "${select[@]}") 2>&1 |
        tee "$out" || rc=$?
    # stack_down normally stops the test stack; this covers a ctest that was
    # cut short, so that no server outlives the run.
    CHUNKD_STACK_DIR=$dir/test-stack "$STACK" down >/dev/null 2>&1 || true

    local line passed=0 failed=0 total note=''
    line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$out" | tail -n 1) || true
    if [[ $line =~ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
        failed=${BASH_REMATCH[1]} total=${BASH_REMATCH[2]}
        passed=$((total - failed))
    elif ((rc != 0)); then
        failed=1 # ctest failed before running tests (none found, bad arguments)
    fi
    ((rc == 0)) || note=" (ctest exit status $rc)"
    TOTAL_PASSED=$((TOTAL_PASSED + passed))
    TOTAL_FAILED=$((TOTAL_FAILED + failed))
    SUMMARY+=("$mode: $passed passed, $failed failed$note")
    return "$rc"
}

# run_fuzz: fuzz.sh builds build-fuzz/ and fuzzes every target; its last
# line gives the counts for the summary.
run_fuzz() {
    local secs=${CHUNKD_FUZZ_SECONDS:-60} out=$CHUNKD_ROOT/build-fuzz/fuzz-summary.log rc=0
    [[ $secs =~ ^[0-9]+$ && $secs -gt 0 ]] || die "CHUNKD_FUZZ_SECONDS must be a positive number"
    mkdir -p "$CHUNKD_ROOT/build-fuzz"
    log "fuzz: ${secs}s per target"
    "$CHUNKD_ROOT/scripts/fuzz.sh" "$secs" 2>&1 | tee "$out" || rc=$?
    local line passed=0 failed=0 note=''
    line=$(grep -E '^fuzz\.sh: [0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1) || true
    if [[ $line =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
        passed=${BASH_REMATCH[1]} failed=${BASH_REMATCH[2]}
    elif ((rc != 0)); then
        failed=1 # fuzz.sh stopped before fuzzing (packages, build)
    fi
    ((rc == 0)) || note=" (fuzz.sh exit status $rc)"
    TOTAL_PASSED=$((TOTAL_PASSED + passed))
    TOTAL_FAILED=$((TOTAL_FAILED + failed))
    SUMMARY+=("fuzz: $passed passed, $failed failed$note")
    return "$rc"
}

# run_bench: bench.sh --quick runs every benchmark workload once on its own
# stack (ports 16470/13470); its last line gives the counts. It reuses
# build/ when that is configured (normal mode built it), else build-bench/.
run_bench() {
    local out=$CHUNKD_ROOT/build-bench/bench-summary.log rc=0
    local -a env=()
    [[ -f $CHUNKD_ROOT/build/CMakeCache.txt ]] && env=(CHUNKD_BENCH_BUILD="$CHUNKD_ROOT/build")
    mkdir -p "$CHUNKD_ROOT/build-bench"
    log "bench: scripts/bench.sh --quick"
    env "${env[@]}" "$CHUNKD_ROOT/scripts/bench.sh" --quick 2>&1 | tee "$out" || rc=$?
    local line passed=0 failed=0 note=''
    line=$(grep -E '^bench\.sh: [0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1) || true
    if [[ $line =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
        passed=${BASH_REMATCH[1]} failed=${BASH_REMATCH[2]}
    elif ((rc != 0)); then
        failed=1 # bench.sh stopped before running (build, stack)
    fi
    ((rc == 0)) || note=" (bench.sh exit status $rc)"
    TOTAL_PASSED=$((TOTAL_PASSED + passed))
    TOTAL_FAILED=$((TOTAL_FAILED + failed))
    SUMMARY+=("bench: $passed passed, $failed failed$note")
    return "$rc"
}

main() {
    local mode=${1:-normal} m status=0
    local -a modes
    case $mode in
    normal | asan | tsan | fuzz | bench) modes=("$mode") ;;
    all) modes=(normal asan tsan fuzz bench) ;;
    *)
        sed -n '2,20s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
        exit 2
        ;;
    esac
    ensure_packages
    for m in "${modes[@]}"; do
        if [[ $m == fuzz ]]; then
            run_fuzz || status=1
        elif [[ $m == bench ]]; then
            run_bench || status=1
        else
            run_mode "$m" || status=1
        fi
    done
    echo
    for m in "${SUMMARY[@]}"; do
        echo "test.sh: $m"
    done
    echo "total: $TOTAL_PASSED passed, $TOTAL_FAILED failed"
    return "$status"
}

main "$@"
