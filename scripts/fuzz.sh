#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) in build-fuzz/ with clang,
# ASan and UBSan, replays the known crashers in tests/fuzz/regressions/,
# then fuzzes each target for SECONDS (default 60).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#       targets: fuzz_proto fuzz_msg fuzz_session fuzz_ws (default: all)
#
# The committed seed corpus is only read: each target fuzzes a scratch copy
# in build-fuzz/corpus/<target> (kept between runs, so coverage accumulates).
# Crash inputs land in build-fuzz/artifacts/<target>/, logs in
# build-fuzz/logs/. The last line reads "fuzz.sh: N passed, M failed", one
# per target; the exit status is 0 only if every target passed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_TARGETS=(fuzz_proto fuzz_msg fuzz_session fuzz_ws)
FUZZ_DIR=$CHUNKD_ROOT/tests/fuzz
BUILD=$CHUNKD_ROOT/build-fuzz

usage() {
    sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

build() {
    log "configuring $BUILD"
    cmake -S "$CHUNKD_ROOT" -B "$BUILD" -DCMAKE_C_COMPILER=clang -DCHUNKD_FUZZ=ON \
        -DCHUNKD_SANITIZE=address,undefined -DBUILD_TESTING=OFF >/dev/null ||
        die "configuring $BUILD failed"
    log "building ${TARGETS[*]}"
    cmake --build "$BUILD" -j "$CHUNKD_JOBS" --target "${TARGETS[@]}" ||
        die "building the fuzz targets failed"
}

# replay TARGET: runs the target once over each known crasher. Non-zero if
# any of them still fails.
replay() {
    local t=$1 dir=$FUZZ_DIR/regressions/$1 log=$BUILD/logs/$1-replay.log
    local -a files=()
    [[ -d $dir ]] && mapfile -t files < <(find "$dir" -type f | sort)
    ((${#files[@]} > 0)) || return 0
    if "$BUILD/$t" "${files[@]}" >"$log" 2>&1; then
        return 0
    fi
    log "$t: a known crasher in ${dir#"$CHUNKD_ROOT"/} still fails; see $log"
    grep -a -E '^Running:|check failed|ERROR: |SUMMARY: ' "$log" | tail -n 6 >&2 || true
    return 1
}

# fuzz TARGET SECONDS: prints one result line; non-zero on a crash.
fuzz() {
    local t=$1 secs=$2 rc=0
    local corpus=$BUILD/corpus/$t art=$BUILD/artifacts/$t log=$BUILD/logs/$t.log
    local marker=$BUILD/logs/$t.start
    mkdir -p "$corpus" "$art"
    cp -n "$FUZZ_DIR/corpus/$t"/* "$corpus"/ 2>/dev/null || true
    touch "$marker"
    UBSAN_OPTIONS=print_stacktrace=1 "$BUILD/$t" -dict="$FUZZ_DIR/chunkd.dict" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$art/" "$corpus" >"$log" 2>&1 || rc=$?
    local execs rate
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    local -a found=()
    mapfile -t found < <(find "$art" -type f -newer "$marker" | sort)
    if ((rc == 0 && ${#found[@]} == 0)); then
        printf 'fuzz.sh: %-13s ok     %s execs in %ss (%s/s)\n' "$t" "${execs:-?}" "$secs" \
            "${rate:-?}"
        return 0
    fi
    printf 'fuzz.sh: %-13s FAILED libFuzzer exit status %d after %s execs; log %s\n' \
        "$t" "$rc" "${execs:-?}" "$log"
    grep -a -E 'check failed|ERROR: |SUMMARY: ' "$log" | head -n 4 | sed 's/^/    /' || true
    local f
    for f in "${found[@]}"; do
        printf '    artifact: %s\n' "$f"
        printf '    reproduce: %s %s\n' "$BUILD/$t" "$f"
    done
    return 1
}

main() {
    local secs=60
    if (($# > 0)); then
        [[ $1 =~ ^[0-9]+$ && $1 -gt 0 ]] || usage
        secs=$1
        shift
    fi
    TARGETS=("$@")
    ((${#TARGETS[@]} > 0)) || TARGETS=("${ALL_TARGETS[@]}")
    local t
    for t in "${TARGETS[@]}"; do
        [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || usage
    done
    ensure_packages
    build
    mkdir -p "$BUILD/logs"
    local passed=0 failed=0
    for t in "${TARGETS[@]}"; do
        if ! replay "$t"; then
            printf 'fuzz.sh: %-13s FAILED a known crasher still fails (not fuzzed)\n' "$t"
            failed=$((failed + 1))
            continue
        fi
        log "$t: fuzzing for ${secs}s"
        if fuzz "$t" "$secs"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
    done
    echo "fuzz.sh: $passed passed, $failed failed"
    ((failed == 0))
}

main "$@"
