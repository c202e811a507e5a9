#!/usr/bin/env bash
# Builds chunkd and runs it on this machine, against a private Redis and
# MariaDB (scripts/stack.sh), with a demo user to upload as.
#
#   scripts/run.sh         install what is missing, build, start everything
#   scripts/run.sh stop    stop chunkd and the stack
#
# Works as root or as a normal user (sudo is then used for apt-get only).
# CHUNKD_LISTEN (default 127.0.0.1:9400) sets where chunkd listens; any other
# CHUNKD_* variable reaches chunkd as well.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUILD=$CHUNKD_ROOT/build
VAR=$CHUNKD_ROOT/var
STACK=$CHUNKD_ROOT/scripts/stack.sh
DEMO_ENV=$VAR/demo-user.env
PID_FILE=$VAR/chunkd.pid
LOG_FILE=$VAR/chunkd.log
LISTEN=${CHUNKD_LISTEN:-127.0.0.1:9400}
DEMO_NAME=demo
WAIT_S=30

# Splits LISTEN into the address a client dials: a wildcard bind is reached
# through loopback.
client_endpoint() {
    local host port
    if [[ $LISTEN =~ ^\[([^]]+)\]:([0-9]+)$ ]]; then
        host=${BASH_REMATCH[1]} port=${BASH_REMATCH[2]}
        [[ $host != "::" ]] || host=::1
        CLIENT_HOST=$host CLIENT_PORT=$port CLIENT_SERVER="[$host]:$port"
    elif [[ $LISTEN =~ ^([^:]*):([0-9]+)$ ]]; then
        host=${BASH_REMATCH[1]} port=${BASH_REMATCH[2]}
        [[ -n $host && $host != 0.0.0.0 ]] || host=127.0.0.1
        CLIENT_HOST=$host CLIENT_PORT=$port CLIENT_SERVER="$host:$port"
    else
        die "CHUNKD_LISTEN='$LISTEN' is not host:port"
    fi
    ((CLIENT_PORT > 0)) || die "CHUNKD_LISTEN needs a fixed port here, not 0"
}

# bin NAME: path of a built program; the top of the build folder first, where
# CMake is set to put them, then the source-like subfolders.
bin() {
    local p
    for p in "$BUILD/$1" "$BUILD/src/$1" "$BUILD/src/"*"/$1"; do
        if [[ -x $p && -f $p ]]; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    die "$1 was not built (looked in $BUILD)"
}

# The pid file only counts while it names a live chunkd.
running_pid() {
    local pid comm
    [[ -r $PID_FILE ]] || return 1
    read -r pid <"$PID_FILE" || [[ -n ${pid:-} ]] || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    read -r comm <"/proc/$pid/comm" 2>/dev/null || return 1
    [[ $comm == chunkd ]] && alive "$pid" || return 1
    printf '%s\n' "$pid"
}

stop_chunkd() {
    local pid
    if pid=$(running_pid); then
        log "stopping chunkd (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 15; then
            log "chunkd (pid $pid) still running after 15 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || die "chunkd (pid $pid) does not stop"
        fi
    fi
    rm -f -- "$PID_FILE"
}

# Keeps one demo user across runs: its credential lives only in DEMO_ENV, so
# when that file is gone or names another user the credential is replaced.
demo_user() {
    local ctl id out cred=''
    ctl=$(bin chunkctl)
    id=$("$ctl" user list | awk -v n="$DEMO_NAME" 'NR > 1 && $4 == n { print $1 }')
    if [[ -n $id && -r $DEMO_ENV ]] && grep -qx "CHUNKUP_USER=$id" "$DEMO_ENV"; then
        cred=$(sed -n 's/^CHUNKUP_CREDENTIAL=//p' "$DEMO_ENV")
    fi
    if [[ ! $cred =~ ^[0-9a-f]{64}$ ]]; then
        if [[ -n $id ]]; then
            log "demo user $id: making a new credential"
            out=$("$ctl" user rotate "$id")
        else
            log "creating the demo user"
            out=$("$ctl" user add "$DEMO_NAME")
        fi
        id=$(sed -n 's/^user_id=//p' <<<"$out")
        cred=$(sed -n 's/^credential=//p' <<<"$out")
        [[ $id =~ ^[0-9]+$ && $cred =~ ^[0-9a-f]{64}$ ]] ||
            die "unexpected output from chunkctl: $out"
    fi
    "$ctl" user enable "$id" >/dev/null
    (
        umask 077
        cat >"$DEMO_ENV.tmp" <<EOT
# Written by scripts/run.sh: the demo user and the local chunkd.
# Load with: set -a; . $DEMO_ENV; set +a
CHUNKUP_USER=$id
CHUNKUP_CREDENTIAL=$cred
CHUNKUP_SERVER=$CLIENT_SERVER
EOT
    ) || die "cannot write $DEMO_ENV"
    mv -f -- "$DEMO_ENV.tmp" "$DEMO_ENV" || die "cannot write $DEMO_ENV"
}

start_chunkd() {
    local pid end
    stop_chunkd
    ! tcp_open "$CLIENT_HOST" "$CLIENT_PORT" ||
        die "$CLIENT_SERVER is already taken by another program; set CHUNKD_LISTEN"
    mkdir -p -- "$VAR/storage"
    local chunkd
    chunkd=$(bin chunkd)
    (
        close_fds
        exec setsid "$chunkd" --storage-dir="$VAR/storage" --listen="$LISTEN"
    ) </dev/null >>"$LOG_FILE" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$PID_FILE"
    end=$((SECONDS + WAIT_S))
    until tcp_open "$CLIENT_HOST" "$CLIENT_PORT"; do
        if ! alive "$pid"; then
            tail -n 30 -- "$LOG_FILE" >&2 || true
            rm -f -- "$PID_FILE"
            die "chunkd exited during start-up; log: $LOG_FILE"
        fi
        if ((SECONDS >= end)); then
            tail -n 30 -- "$LOG_FILE" >&2 || true
            die "chunkd (pid $pid) does not accept connections on $CLIENT_SERVER after ${WAIT_S}s; log: $LOG_FILE"
        fi
        sleep 0.1
    done
    log "chunkd running (pid $pid) on $CLIENT_SERVER; log: $LOG_FILE"
}

cmd_start() {
    client_endpoint
    ensure_packages
    cmake_build "$BUILD"
    mkdir -p -- "$VAR"
    "$STACK" up
    local env_file
    env_file=$("$STACK" env)
    set -a
    # shellcheck source=/dev/null
    . "$env_file"
    set +a
    demo_user
    start_chunkd
    local chunkup ctl
    chunkup=$(bin chunkup 2>/dev/null) || chunkup=$BUILD/chunkup
    ctl=$(bin chunkctl)
    cat <<EOF

chunkd is running on $CLIENT_SERVER (pid $(cat "$PID_FILE"), log var/chunkd.log).
Upload a file as the demo user:

    cd $CHUNKD_ROOT
    set -a; . var/demo-user.env; set +a
    ${chunkup#"$CHUNKD_ROOT"/} upload FILE

More users:  set -a; . $env_file; set +a; ${ctl#"$CHUNKD_ROOT"/} user add NAME
Stop all:    scripts/run.sh stop
EOF
}

cmd_stop() {
    stop_chunkd
    "$STACK" down
}

case ${1:-} in
'') cmd_start ;;
stop) cmd_stop ;;
*)
    sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
