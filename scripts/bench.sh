#!/usr/bin/env bash
# Benchmarks chunkd against the limits of this machine and against a peer,
# all measured in the same run (docs/PERFORMANCE.md).
#
#   scripts/bench.sh            the full benchmark: every workload 3 times
#                               (the small-file and 5,000-connection ones 5
#                               times), medians in a table (about 15 minutes)
#   scripts/bench.sh --quick    tiny sizes, once each, no timing targets: a
#                               functional check for CI (under 2 minutes)
#
# Baselines: bench/sink (raw bytes from loopback TCP into a file, with and
# without a final fdatasync, and synced with every byte hashed as chunkd
# hashes it) and the SHA-256 rate of one core (openssl speed). Peer:
# @tus/server + @tus/file-store on this machine's Node.js, installed by npm
# ci from bench/peer/package-lock.json into build-bench/tus (skipped when
# node or npm is missing, or the peer does not start). Everything runs on
# loopback; servers listen on port 0.
#
# Results: build-bench/results/bench-<time>.md and .csv (the table) and
# .runs (every run's raw figures). The last line reads
# "bench.sh: N passed, M failed", one count per workload run: a run fails
# when an upload does not complete, a SHA-256 differs, or the rows and keys
# it should leave are not there. The exit status is 0 only if none failed.
#
# Environment: CHUNKD_BENCH_BUILD (build folder, default build-bench),
# CHUNKD_BENCH_RUNS (3), CHUNKD_BENCH_SHORT_RUNS (runs of the small-file
# and 5,000-connection workloads: 5), CHUNKD_BENCH_WARMUP (1: each server
# first serves one run that is not recorded; 0 with --quick),
# CHUNKD_BENCH_REDIS_PORT (16470),
# CHUNKD_BENCH_MYSQL_PORT (13470), CHUNKD_BENCH_CHUNK (chunkd's chunk, 64k),
# CHUNKD_BENCH_TUS_CHUNK (bytes per tus PATCH, 1m),
# CHUNKD_BENCH_WORKLOADS (space-separated subset of: sha single par16
# par256 small conns chunks).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WORK=$CHUNKD_ROOT/build-bench
BUILD=${CHUNKD_BENCH_BUILD:-$WORK}
STACK=$CHUNKD_ROOT/scripts/stack.sh
DATA=$WORK/data
LOGS=$WORK/logs
RESULTS=$WORK/results
TUS_DIR=$WORK/tus
CHUNK=${CHUNKD_BENCH_CHUNK:-64k}
TUS_CHUNK=${CHUNKD_BENCH_TUS_CHUNK:-1m}
export CHUNKD_STACK_DIR=$WORK/stack
export CHUNKD_STACK_REDIS_PORT=${CHUNKD_BENCH_REDIS_PORT:-16470}
export CHUNKD_STACK_MYSQL_PORT=${CHUNKD_BENCH_MYSQL_PORT:-13470}
CORES=$(nproc)
MAX_THREADS=$((CORES * 2 + 4))

QUICK=0
PASSED=0
FAILED=0
declare -A PIDS=()   # name -> pid of a server this script started
declare -A PORTS=()  # name -> its port
TUS_OK=0
RUN_ID=$(date +%Y%m%d-%H%M%S)

usage() {
    sed -n '2,27s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# ---- servers -----------------------------------------------------------

# wait_port NAME PID FILE: waits for the ready file a server writes once it
# listens, and records the port; 1 (said why) when it does not come.
wait_port() {
    local name=$1 pid=$2 file=$3 end=$((SECONDS + 30)) port=''
    until [[ -s $file ]] && read -r port <"$file" && [[ $port =~ ^[0-9]+$ ]]; do
        if ! alive "$pid"; then
            tail -n 20 "$LOGS/$name.log" >&2 || true
            log "$name exited during start-up; log $LOGS/$name.log"
            return 1
        fi
        if ((SECONDS >= end)); then
            log "$name does not listen after 30 s; log $LOGS/$name.log"
            return 1
        fi
        sleep 0.05
    done
    PORTS[$name]=$port
}

stop_server() {
    local name=$1 pid=${PIDS[$1]:-}
    [[ -n $pid ]] || return 0
    unset "PIDS[$name]"
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 20; then
            log "$name (pid $pid) ignores SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

stop_all() {
    local name
    for name in "${!PIDS[@]}"; do stop_server "$name"; done
}

# A fresh server per workload, so that its peak RSS (VmHWM) is that
# workload's.
start_chunkd() {
    stop_server chunkd
    local ready
    fresh_start chunkd
    mkdir -p -- "$DATA/chunkd"
    (
        close_fds
        exec "$BUILD/chunkd" --listen 127.0.0.1:0 --ready-file "$ready" \
            --storage-dir "$DATA/chunkd" --redis-prefix "bench:$RUN_ID:" \
            --max-connections 10000 --max-connections-per-ip 10000 \
            --max-uploads-per-user 1000 --log-level warn
    ) </dev/null >>"$LOGS/chunkd.log" 2>&1 &
    PIDS[chunkd]=$!
    wait_port chunkd "${PIDS[chunkd]}" "$ready" || die "chunkd did not start"
}

start_sink() {
    local name=$1
    shift
    stop_server "$name"
    local ready
    fresh_start "$name"
    (
        close_fds
        exec "$BUILD/sink" --listen 127.0.0.1:0 --dir "$DATA/$name" \
            --ready-file "$ready" "$@"
    ) </dev/null >>"$LOGS/$name.log" 2>&1 &
    PIDS[$name]=$!
    wait_port "$name" "${PIDS[$name]}" "$ready" || die "$name did not start"
}

start_tus() {
    ((TUS_OK)) || return 1
    stop_server tus
    local ready
    fresh_start tus
    (
        close_fds
        cd "$TUS_DIR"
        exec node tus_server.js --dir "$DATA/tus" --ready-file "$ready"
    ) </dev/null >>"$LOGS/tus.log" 2>&1 &
    PIDS[tus]=$!
    # The peer is not ours: one that cannot start (a Node.js older than its
    # packages want, say) leaves its columns empty, not the run failed.
    if ! wait_port tus "${PIDS[tus]}" "$ready"; then
        stop_server tus
        TUS_OK=0
        log "@tus/server did not start: the peer is skipped from here on"
        return 1
    fi
}

# The peer's packages go into a scratch folder, at the versions of
# bench/peer/package-lock.json; again only when that lock changed.
setup_tus() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        log "node or npm not found: the @tus/server peer is skipped"
        return 0
    fi
    mkdir -p -- "$TUS_DIR"
    cp -- "$CHUNKD_ROOT/bench/tus_server.js" "$TUS_DIR/tus_server.js"
    local lock=$CHUNKD_ROOT/bench/peer/package-lock.json
    if [[ ! -d $TUS_DIR/node_modules ]] || ! cmp -s "$lock" "$TUS_DIR/installed.lock"; then
        cp -- "$CHUNKD_ROOT/bench/peer/package.json" "$lock" "$TUS_DIR/"
        rm -f -- "$TUS_DIR/installed.lock"
        log "installing @tus/server and @tus/file-store into ${TUS_DIR#"$CHUNKD_ROOT"/}"
        if ! (cd "$TUS_DIR" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error \
            >"$LOGS/npm.log" 2>&1); then
            tail -n 20 "$LOGS/npm.log" >&2 || true
            log "npm ci failed: the @tus/server peer is skipped"
            return 0
        fi
        cp -- "$lock" "$TUS_DIR/installed.lock"
    fi
    TUS_OK=1
}

cleanup() {
    stop_all
    "$STACK" down >/dev/null 2>&1 || true
    rm -rf -- "$RETIRED" "$DATA/ready"
}

# ---- runs --------------------------------------------------------------

RUNS_FILE=
# record WORKLOAD SYSTEM RUN LINE: keeps a run's figures for the table.
record() {
    printf 'workload=%s system=%s run=%s %s\n' "$1" "$2" "$3" "${4#result }" >>"$RUNS_FILE"
}

# field KEY LINE
field() { sed -n "s/.* $1=\\([^ ]*\\).*/\\1/p" <<<" $2"; }

# check NAME CONDITION-RESULT MESSAGE: one functional check.
pass() { PASSED=$((PASSED + 1)); }
fail() {
    FAILED=$((FAILED + 1))
    log "FAILED: $*"
}

# verify_files DIR COUNT SHA: the server left COUNT files of the right
# content (one is hashed; chunkd's SUCCESS already carried every hash).
verify_files() {
    local dir=$1 want=$2 sha=$3 n f got
    # chunkd-layout: chunkd's mark of its storage layout, not a document
    n=$(find "$dir" -type f ! -name '*.json' ! -name chunkd-layout | wc -l)
    if ((n != want)); then
        echo "found $n files in $dir, expected $want"
        return 1
    fi
    ((want > 0)) || return 0
    f=$(find "$dir" -type f ! -name '*.json' ! -name chunkd-layout | head -n 1)
    got=$(sha256sum -- "$f" | cut -d' ' -f1)
    if [[ $got != "$sha" ]]; then
        echo "$f hashes to $got, sent $sha"
        return 1
    fi
}

# Nothing the benchmark stores is deleted before it ends. ext4 without a
# journal, as here, will not reuse an inode freed in the last 60 s (300 s
# more while its inode table block is dirty, which every new file in that
# block makes it), and it finds that out by looking up each such inode, one
# by one, on every allocation: creating files after thousands were deleted
# made every system's small-file rate about a fifth lower, and how
# much depended on which block groups the new files landed in. So a run's
# files are emptied (their blocks freed, their write-back dropped) and
# moved aside with their inodes; everything goes at the end (cleanup).
RETIRED=$DATA/retired
ASIDE_N=0 # names the things moved aside, and ready files, uniquely

# empty_files DIR: frees the blocks of the files under DIR (and drops their
# unwritten pages) but keeps their inodes; chunkd's layout marker stays.
empty_files() {
    find "$1" -type f ! -name chunkd-layout -size +0 -exec truncate -s 0 -- {} +
}

# fresh_start NAME: before a server NAME starts, its folder of the last
# workload ($DATA/NAME) goes aside whole, and ready (the caller's local) is
# set to a ready file of its own: rewriting one would free the old inode
# (ready files are written whole and renamed into place).
fresh_start() {
    local dir=$DATA/$1
    mkdir -p -- "$RETIRED" "$DATA/ready"
    ASIDE_N=$((ASIDE_N + 1))
    ready=$DATA/ready/$1.$ASIDE_N
    [[ -e $dir ]] || return 0
    empty_files "$dir"
    mv -- "$dir" "$RETIRED/$ASIDE_N"
}

# settle DIR: moves what a run stored in DIR aside, emptied, and lets the
# disk settle, so that the next run does not pay for this one's write-back.
# The directories stay (chunkd's buckets, as on a server that has been
# running; file names are unique across runs).
settle() {
    local dir=$1 to
    ASIDE_N=$((ASIDE_N + 1))
    to=$RETIRED/$ASIDE_N
    mkdir -p -- "$to"
    empty_files "$dir"
    find "$dir" -type f ! -name chunkd-layout -exec mv -t "$to" -- {} +
    sync
}

mysql_q() {
    MYSQL_PWD=$CHUNKD_MYSQL_PASSWORD mariadb --no-defaults -h 127.0.0.1 -P "$CHUNKD_MYSQL_PORT" \
        -u "$CHUNKD_MYSQL_USER" "$CHUNKD_MYSQL_DATABASE" -N -B -e "$1"
}

completed_rows() { mysql_q "SELECT COUNT(*) FROM documents WHERE user_id = $BENCH_USER AND status = 'completed'"; }

redis_keys() {
    redis-cli -h 127.0.0.1 -p "$CHUNKD_REDIS_PORT" --scan --pattern "bench:$RUN_ID:upload:*" | wc -l
}

# one_run WORKLOAD SYSTEM RUN -- LOADGEN-ARGS: runs the load generator once
# against SYSTEM (chunkd, sink, sinksync, sinksha or tus) and checks what it left.
# bytes SIZE: "64k", "16m", "1g" or plain bytes, as the load generator reads them.
bytes() {
    local n=${1%[kKmMgG]} unit=${1: -1}
    case $unit in
    k | K) echo $((n << 10)) ;;
    m | M) echo $((n << 20)) ;;
    g | G) echo $((n << 30)) ;;
    *) echo "$1" ;;
    esac
}

# warm_mib LOADGEN-ARGS...: the loadgen's --warm-mib for a measured run: as
# many MiB as the run will write into the page cache (--size x --uploads,
# plus 64 MiB), at most half of what is available; 0 in quick mode. See
# bench/lg_warm.h: on these virtual machines the first write to memory the
# guest had freed costs a fault in the host, and how much of it a run meets
# depends on what ran before it.
warm_mib() {
    local size=0 uploads=1 avail mib
    ((QUICK)) && {
        echo 0
        return
    }
    while (($#)); do
        case $1 in
        --size) size=$(bytes "$2") ;;
        --uploads) uploads=$2 ;;
        esac
        shift
    done
    mib=$(((size * uploads >> 20) + 64))
    avail=$(awk '/^MemAvailable:/ { print int($2 / 2048) }' /proc/meminfo)
    echo $((mib > avail ? avail : mib))
}

one_run() {
    local wl=$1 sys=$2 run=$3 what="run $3"
    ((run > 0)) || what="warm-up"
    shift 4
    local port=${PORTS[$sys]} pid=${PIDS[$sys]} proto dir out rc=0 rows_before=0
    local -a auth=()
    case $sys in
    chunkd)
        proto=chunkd dir=$DATA/chunkd
        auth=(--user-id "$BENCH_USER" --credential "$BENCH_CRED")
        rows_before=$(completed_rows)
        ;;
    sink | sinksync | sinksha) proto=raw dir=$DATA/$sys ;;
    tus) proto=tus dir=$DATA/tus ;;
    esac
    out=$("$BUILD/loadgen" --proto "$proto" --server "127.0.0.1:$port" --server-pid "$pid" \
        --label "$wl" --warm-mib "$(warm_mib "$@")" "${auth[@]}" "$@" 2>>"$LOGS/loadgen.log") ||
        rc=$?
    local line
    line=$(grep '^result ' <<<"$out" | tail -n 1) || true
    if [[ -z $line ]]; then
        fail "$wl/$sys $what: the load generator printed no result (exit $rc; see $LOGS/loadgen.log)"
        return 0
    fi
    if ((run > 0)); then
        record "$wl" "$sys" "$run" "$line"
    fi
    local ok uploads sha why=''
    ok=$(field ok "$line") uploads=$(field uploads "$line") sha=$(field sha256 "$line")
    if ((rc != 0)); then
        why="loadgen exit $rc: $(field ok "$line") of $uploads uploads, $(field idle_ok "$line") of $(field idle "$line") idle connections answered"
    elif ! why=$(verify_files "$dir" "$ok" "$sha"); then
        :
    elif [[ $sys == chunkd ]]; then
        local rows keys
        rows=$(($(completed_rows) - rows_before))
        keys=$(redis_keys)
        if ((rows != ok)); then
            why="MySQL has $rows new completed rows, expected $ok"
        elif ((keys != 0)); then
            why="$keys upload keys left in Redis"
        fi
    fi
    if [[ -n $why ]]; then
        fail "$wl/$sys $what: $why"
    else
        pass
        printf 'bench.sh: %-7s %-8s %s: %s uploads in %ss, %s MB/s, %s uploads/s, p99 %s ms\n' \
            "$wl" "$sys" "$what" "$ok" "$(field seconds "$line")" "$(field mb_s "$line")" \
            "$(field uploads_s "$line")" "$(field p99_ms "$line")" >&2
    fi
    settle "$dir"
}

# system_args SYSTEM LOADGEN-ARGS...: sets args (the caller's local) to
# what SYSTEM runs with. The sinks' raw protocol has no question for an idle
# connection, so they run without --idle: their figure is the same
# uploads' (chunkd measures the same with or without its idle connections,
# docs/PERFORMANCE.md). tus sends CHUNKD_BENCH_TUS_CHUNK bytes a PATCH.
system_args() {
    local sys=$1
    shift
    args=()
    while (($#)); do
        if [[ $sys == sink* && $1 == --idle ]]; then
            shift 2
            continue
        fi
        args+=("$1")
        shift
    done
    if [[ $sys == tus ]]; then
        args+=(--chunk "$TUS_CHUNK")
    fi
}

# workload NAME SYSTEMS -- LOADGEN-ARGS: each system, RUNS times, with
# fresh servers; systems take turns run by run so that drifting load on
# the machine spreads over all of them. With WARMUP, each server first
# serves one run that is checked but not recorded (run 0): @tus/server's
# JavaScript gets faster over its first runs (small files: 494, 667, 794,
# 763 and 865 uploads/s in five runs in a row), and what is compared is
# every system's steady state (chunkd's first run also prepares its MySQL
# statements for each group size).
workload() {
    local wl=$1 systems=$2
    shift 3
    local sys run
    for sys in $systems; do
        case $sys in
        chunkd) start_chunkd ;;
        sink) start_sink sink ;;
        sinksync) start_sink sinksync --sync ;;
        sinksha) start_sink sinksha --sync --sha ;;
        tus) start_tus || continue ;;
        esac
    done
    for ((run = WARMUP ? 0 : 1; run <= RUNS; run++)); do
        for sys in $systems; do
            [[ -n ${PIDS[$sys]:-} ]] || continue
            local -a args
            system_args "$sys" "$@"
            one_run "$wl" "$sys" "$run" -- "${args[@]}"
        done
    done
    for sys in $systems; do stop_server "$sys"; done
}

# SHA-256 of one core through OpenSSL, in MB/s (10^6 bytes).
sha_rate() {
    local secs=$1 run out kbs
    for ((run = 1; run <= RUNS; run++)); do
        out=$(openssl speed -evp sha256 -bytes 65536 -seconds "$secs" 2>/dev/null) || {
            fail "sha: openssl speed failed"
            return 0
        }
        kbs=$(awk '$1 == "sha256" { v = $2; sub(/k$/, "", v); print v }' <<<"$out" | tail -n 1)
        if [[ -z $kbs ]]; then
            fail "sha: cannot read the rate from openssl speed"
            return 0
        fi
        record sha openssl "$run" "mb_s=$(awk -v k="$kbs" 'BEGIN { printf "%.1f", k / 1000 }') ok=1 failed=0"
        pass
    done
}

run_workloads() {
    local wl
    for wl in $WORKLOADS; do
        log "workload $wl"
        case $wl in
        sha) sha_rate "$SHA_SECS" ;;
        single)
            workload single "chunkd sinksync sinksha sink tus" -- --size "$SINGLE_SIZE" --uploads 1 \
                --chunk "$CHUNK"
            ;;
        par16)
            workload par16 "chunkd sinksync sinksha sink tus" -- --size "$PAR_SIZE" --uploads "$PAR16" \
                --concurrency "$PAR16" --chunk "$CHUNK"
            ;;
        par256)
            workload par256 "chunkd sinksync sinksha sink tus" -- --size "$PAR_SIZE" --uploads "$PAR256" \
                --concurrency "$PAR256" --chunk "$CHUNK"
            ;;
        small)
            RUNS=$SHORT_RUNS workload small "chunkd sinksync sinksha sink tus" -- --size 64k --uploads "$SMALL_N" \
                --concurrency "$SMALL_C" --chunk "$CHUNK"
            ;;
        conns)
            RUNS=$SHORT_RUNS workload conns "chunkd sinksync sinksha tus" -- --size "$CONN_SIZE" --uploads "$CONN_UP" \
                --concurrency "$CONN_UP" --idle "$CONN_IDLE" --chunk "$CHUNK" --timeout-s 600
            ;;
        chunks)
            local c
            for c in 256k 1m; do
                workload "single-$c" chunkd -- --size "$SINGLE_SIZE" --uploads 1 --chunk "$c"
            done
            ;;
        *) die "unknown workload '$wl'" ;;
        esac
    done
}

# ---- the table ----------------------------------------------------------

make_table() {
    local md=$1 csv=$2
    awk -v cores="$CORES" -v maxthreads="$MAX_THREADS" -v quick="$QUICK" \
        -v md="$md" -v csv="$csv" -f "$CHUNKD_ROOT/bench/table.awk" "$RUNS_FILE"
}

main() {
    while (($# > 0)); do
        case $1 in
        --quick) QUICK=1 ;;
        -h | --help) usage ;;
        *) usage ;;
        esac
        shift
    done
    if ((QUICK)); then
        RUNS=${CHUNKD_BENCH_RUNS:-1} SHA_SECS=1 SHORT_MIN=1 WARMUP=${CHUNKD_BENCH_WARMUP:-0}
        SHORT_RUNS=${CHUNKD_BENCH_SHORT_RUNS:-}
        SINGLE_SIZE=8m PAR_SIZE=1m PAR16=16 PAR256=32 SMALL_N=200 SMALL_C=16
        CONN_IDLE=270 CONN_UP=30 CONN_SIZE=256k
        WORKLOADS=${CHUNKD_BENCH_WORKLOADS:-sha single par16 par256 small conns}
    else
        RUNS=${CHUNKD_BENCH_RUNS:-3} SHA_SECS=3 WARMUP=${CHUNKD_BENCH_WARMUP:-1}
        # These two last a few seconds a run, and their figures swing the
        # most from run to run on this shared machine (the peer's by up to
        # 1.8x within one benchmark, docs/PERFORMANCE.md): more runs make
        # their medians steadier, for every system alike.
        SHORT_RUNS=${CHUNKD_BENCH_SHORT_RUNS:-}
        SHORT_MIN=5
        SINGLE_SIZE=500m PAR_SIZE=16m PAR16=16 PAR256=256 SMALL_N=2000 SMALL_C=64
        CONN_IDLE=4500 CONN_UP=500 CONN_SIZE=1m
        WORKLOADS=${CHUNKD_BENCH_WORKLOADS:-sha single par16 par256 small conns chunks}
    fi
    [[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "CHUNKD_BENCH_RUNS must be a positive number"
    [[ $WARMUP == [01] ]] || die "CHUNKD_BENCH_WARMUP must be 0 or 1"
    [[ -n $SHORT_RUNS ]] || SHORT_RUNS=$((RUNS > SHORT_MIN ? RUNS : SHORT_MIN))
    [[ $SHORT_RUNS =~ ^[1-9][0-9]*$ ]] || die "CHUNKD_BENCH_SHORT_RUNS must be a positive number"
    ensure_packages
    mkdir -p -- "$WORK" "$DATA" "$LOGS" "$RESULTS"
    : >"$LOGS/loadgen.log"
    if [[ -f $BUILD/CMakeCache.txt ]]; then
        log "building in $BUILD"
    else
        log "configuring $BUILD"
        cmake -S "$CHUNKD_ROOT" -B "$BUILD" -DBUILD_TESTING=OFF >/dev/null ||
            die "configuring $BUILD failed"
    fi
    cmake --build "$BUILD" -j "$CHUNKD_JOBS" --target chunkd chunkctl loadgen sink >/dev/null ||
        die "building chunkd and the benchmark programs in $BUILD failed"
    # 5,000 connections on each side of loopback, plus files.
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    (($(ulimit -n) >= 12000)) || log "ulimit -n is $(ulimit -n): the 5,000-connection workload may fail"
    setup_tus
    trap cleanup EXIT
    "$STACK" up >"$LOGS/stack.log" 2>&1 || { tail -n 20 "$LOGS/stack.log" >&2; die "stack.sh up failed"; }
    set -a
    # shellcheck source=/dev/null
    . "$("$STACK" env)"
    set +a
    local user
    user=$("$BUILD/chunkctl" user add "bench-$RUN_ID-$$" --json) || die "chunkctl user add failed"
    BENCH_USER=$(sed -n 's/.*"user_id":\([0-9]*\).*/\1/p' <<<"$user")
    BENCH_CRED=$(sed -n 's/.*"credential":"\([0-9a-f]*\)".*/\1/p' <<<"$user")
    [[ -n $BENCH_USER && -n $BENCH_CRED ]] || die "unexpected output from chunkctl: $user"

    local base=$RESULTS/bench-$RUN_ID
    ((QUICK)) && base=$base-quick
    RUNS_FILE=$base.runs
    : >"$RUNS_FILE"
    log "$((QUICK ? 1 : 0)) quick; $RUNS run(s) per workload, $SHORT_RUNS of small and conns; $CORES cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    run_workloads
    make_table "$base.md" "$base.csv" || fail "building the table failed"
    cat "$base.md"
    log "table: ${base#"$CHUNKD_ROOT"/}.md, .csv; every run: ${base#"$CHUNKD_ROOT"/}.runs"
    echo "bench.sh: $PASSED passed, $FAILED failed"
    ((FAILED == 0))
}

main "$@"
