#!/usr/bin/env bash
# A private Redis and MariaDB for chunkd, on loopback, with all data in one
# folder. Touches no system service and never needs sudo, so it works the same
# for root (CI) and for a normal user.
#
#   scripts/stack.sh up [--fresh]   start both (idempotent); --fresh wipes first
#   scripts/stack.sh down           stop both
#   scripts/stack.sh status         say what runs (exit 0 only if both do)
#   scripts/stack.sh env            print the path of the env file
#   scripts/stack.sh destroy        stop both and delete the stack folder
#
# Environment: CHUNKD_STACK_DIR (default <repo>/var/stack),
# CHUNKD_STACK_REDIS_PORT (6390), CHUNKD_STACK_MYSQL_PORT (3390),
# CHUNKD_STACK_WAIT (seconds to wait for a server, 30),
# CHUNKD_STACK_MYSQL_OPTS (more mariadbd options, split on spaces; the tests
# use it to run MariaDB as a Galera node or another setup would, e.g.
# --innodb-autoinc-lock-mode=2).
set -euo pipefail
export LC_ALL=C # glob order of sql/*.sql is byte order, whatever the locale

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
D=$(realpath -m -- "${CHUNKD_STACK_DIR:-$ROOT/var/stack}")
WAIT_S=${CHUNKD_STACK_WAIT:-30}
DB_NAME=chunkd
DB_USER=chunkd
# The stack's own files, all inside $D.
MARKER=$D/.chunkd-stack
STATE=$D/stack.state
ENV_FILE=$D/stack.env
PW_FILE=$D/mysql-password
REDIS_DIR=$D/redis
REDIS_PID=$D/redis.pid
REDIS_LOG=$D/redis.log
MYSQL_DATA=$D/mysql
MYSQL_PID=$D/mysqld.pid
MYSQL_ERR=$D/mysqld.err
MYSQL_OUT=$D/mysqld.out
REDIS_OUT=$D/redis.out
MYSQL_INSTALLED=$D/mysql.installed

die() {
    printf 'stack.sh: %s\n' "$*" >&2
    exit 1
}
say() { printf 'stack.sh: %s\n' "$*"; }

usage() {
    sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# Looks in sbin too: a normal user's PATH often lacks /usr/sbin (mariadbd).
find_bin() {
    local p
    p=$(PATH=$PATH:/usr/sbin:/sbin command -v "$1") ||
        die "$1 not found; install the Debian package $2"
    printf '%s\n' "$p"
}

valid_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && (($1 >= 1 && $1 <= 65535)); }

# alive PID: the process exists and is not a zombie.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# pid_of FILE COMM: prints the pid recorded in FILE when that process is alive
# and is COMM, so a stale pid file or a recycled pid is never taken for ours.
pid_of() {
    local pid comm
    [[ -r $1 ]] || return 1
    read -r pid <"$1" 2>/dev/null || [[ -n ${pid:-} ]] || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    read -r comm <"/proc/$pid/comm" 2>/dev/null || return 1
    [[ $comm == "$2" ]] && alive "$pid" || return 1
    printf '%s\n' "$pid"
}

# wait_gone PID SECONDS
wait_gone() {
    local end=$((SECONDS + $2))
    while alive "$1"; do
        ((SECONDS < end)) || return 1
        sleep 0.1
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Servers must not keep our descriptors: an inherited pipe would hold a
# caller that waits for end of output (ctest) open, and the lock fd 9 would
# stay locked for the server's lifetime. Call in the subshell that execs.
close_fds() {
    local fd
    for fd in "/proc/$BASHPID/fd/"*; do
        fd=${fd##*/}
        if ((fd > 2)); then exec {fd}>&-; fi
    done
}

# Ports: environment, else what this stack last ran on, else the defaults;
# the socket goes into $D unless that path is too long for a unix socket.
load_settings() {
    local key val state_redis='' state_mysql='' state_sock=''
    if [[ -r $STATE ]]; then
        while IFS='=' read -r key val; do
            case $key in
            REDIS_PORT) state_redis=$val ;;
            MYSQL_PORT) state_mysql=$val ;;
            MYSQL_SOCKET) state_sock=$val ;;
            esac
        done <"$STATE"
    fi
    if [[ $1 == up ]]; then
        REDIS_PORT=${CHUNKD_STACK_REDIS_PORT:-${state_redis:-6390}}
        MYSQL_PORT=${CHUNKD_STACK_MYSQL_PORT:-${state_mysql:-3390}}
    else
        # down and status act on what runs, whatever the environment says now.
        REDIS_PORT=${state_redis:-${CHUNKD_STACK_REDIS_PORT:-6390}}
        MYSQL_PORT=${state_mysql:-${CHUNKD_STACK_MYSQL_PORT:-3390}}
    fi
    valid_port "$REDIS_PORT" || die "Redis port '$REDIS_PORT' is not a port number"
    valid_port "$MYSQL_PORT" || die "MariaDB port '$MYSQL_PORT' is not a port number"
    [[ $REDIS_PORT != "$MYSQL_PORT" ]] || die "Redis and MariaDB ports are both $REDIS_PORT"
    SOCK=${state_sock:-$D/mysqld.sock}
    STATE_REDIS=$state_redis
    STATE_MYSQL=$state_mysql
}

# sun_path holds 108 bytes; deep build folders (CI clones) can exceed that, so
# such stacks keep their socket in a private folder under /tmp instead.
choose_socket() {
    SOCK=$D/mysqld.sock
    ((${#SOCK} <= 100)) && return 0
    local dir
    dir=${TMPDIR:-/tmp}/chunkd-stack-$(id -u)-$(printf '%s' "$D" | sha256sum | cut -c1-16)
    mkdir -p -- "$dir" || die "cannot create $dir"
    chmod 0700 -- "$dir" || die "cannot make $dir private"
    [[ -O $dir && ! -L $dir ]] || die "$dir is not owned by $(id -un)"
    SOCK=$dir/mysqld.sock
    ((${#SOCK} <= 100)) || die "socket path $SOCK is too long"
}

write_state() {
    local tmp=$STATE.tmp
    printf 'REDIS_PORT=%s\nMYSQL_PORT=%s\nMYSQL_SOCKET=%s\n' \
        "$REDIS_PORT" "$MYSQL_PORT" "$SOCK" >"$tmp" || die "cannot write $tmp"
    mv -f -- "$tmp" "$STATE" || die "cannot write $STATE"
}

lock_stack() {
    exec 9>>"$D/.lock" || die "cannot open $D/.lock"
    flock -w 300 9 || die "another stack.sh holds $D/.lock"
}

redis_cli() { "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# The MariaDB account named like the OS user is the admin: mariadb-install-db
# ties it to this OS user through unix_socket, so no admin password exists and
# only this user (through the socket in a 0700 folder) can use it.
mysql_admin() {
    "$MARIADB" --no-defaults --protocol=socket --socket="$SOCK" --user="$(id -un)" \
        --batch --skip-column-names "$@"
}

redis_ready() { [[ $(redis_cli ping 2>/dev/null) == PONG ]]; }

mysql_ready() {
    "$MARIADB_ADMIN" --no-defaults --protocol=socket --socket="$SOCK" \
        --user="$(id -un)" --connect-timeout=2 ping >/dev/null 2>&1
}

# wait_ready PID CHECK LOG NAME: polls CHECK until it passes, PID dies or
# WAIT_S runs out; on failure shows the end of LOG.
wait_ready() {
    local pid=$1 check=$2 log=$3 name=$4 end=$((SECONDS + WAIT_S))
    until $check; do
        if ! alive "$pid"; then
            tail -n 40 -- "$log" >&2 2>/dev/null || true
            die "$name exited during start-up; log: $log"
        fi
        if ((SECONDS >= end)); then
            tail -n 40 -- "$log" >&2 2>/dev/null || true
            die "$name (pid $pid) not ready after ${WAIT_S}s; log: $log"
        fi
        sleep 0.1
    done
}

redis_up() {
    local pid end
    if pid=$(pid_of "$REDIS_PID" redis-server); then
        wait_ready "$pid" redis_ready "$REDIS_LOG" redis
        say "redis: already running (pid $pid, 127.0.0.1:$REDIS_PORT)"
        return 0
    fi
    port_open "$REDIS_PORT" &&
        die "port $REDIS_PORT is taken by another program; choose another with CHUNKD_STACK_REDIS_PORT"
    mkdir -p -- "$REDIS_DIR"
    rm -f -- "$REDIS_PID"
    # RDB snapshots are off (--save ''): the AOF alone is the persistence.
    (
        close_fds
        exec "$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" \
            --daemonize yes --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" \
            --appendonly yes --appendfsync everysec --save ''
    ) </dev/null >>"$REDIS_OUT" 2>&1 ||
        { tail -n 40 -- "$REDIS_OUT" "$REDIS_LOG" >&2 || true; die "redis-server failed to start; log: $REDIS_LOG"; }
    end=$((SECONDS + WAIT_S))
    until pid=$(pid_of "$REDIS_PID" redis-server); do
        if ((SECONDS >= end)); then
            tail -n 40 -- "$REDIS_LOG" >&2 || true
            die "redis-server did not start; log: $REDIS_LOG"
        fi
        sleep 0.1
    done
    wait_ready "$pid" redis_ready "$REDIS_LOG" redis
    say "redis: started (pid $pid, 127.0.0.1:$REDIS_PORT, data $REDIS_DIR)"
}

root_opts() { if (($(id -u) == 0)); then printf '%s\n' --user=root; fi; }

mysql_install() {
    [[ -e $MYSQL_INSTALLED ]] && return 0
    # A data folder without the marker is from an interrupted first start.
    rm -rf -- "$MYSQL_DATA"
    mkdir -p -- "$MYSQL_DATA"
    say "mariadb: creating data folder $MYSQL_DATA"
    local -a opts
    mapfile -t opts < <(root_opts)
    (
        close_fds
        exec "$INSTALL_DB" --no-defaults --datadir="$MYSQL_DATA" "${opts[@]}" \
            --auth-root-authentication-method=socket --auth-root-socket-user="$(id -un)" \
            --skip-test-db --skip-name-resolve
    ) >"$D/install-db.log" 2>&1 </dev/null ||
        { tail -n 40 -- "$D/install-db.log" >&2 || true; die "mariadb-install-db failed; log: $D/install-db.log"; }
    : >"$MYSQL_INSTALLED"
}

mysql_up() {
    local pid
    if pid=$(pid_of "$MYSQL_PID" mariadbd); then
        wait_ready "$pid" mysql_ready "$MYSQL_ERR" mariadb
        say "mariadb: already running (pid $pid, 127.0.0.1:$MYSQL_PORT)"
        return 0
    fi
    port_open "$MYSQL_PORT" &&
        die "port $MYSQL_PORT is taken by another program; choose another with CHUNKD_STACK_MYSQL_PORT"
    mysql_install
    rm -f -- "$MYSQL_PID" "$SOCK"
    local -a opts extra=()
    mapfile -t opts < <(root_opts)
    read -r -a extra <<<"${CHUNKD_STACK_MYSQL_OPTS:-}"
    # setsid: the server outlives this script and the caller's process group
    # (a terminal's Ctrl-C, a test runner's kill). Its stdio goes to a file so
    # that a caller reading our output (ctest) is not held open by it.
    (
        close_fds
        exec setsid "$MARIADBD" --no-defaults "${opts[@]}" --datadir="$MYSQL_DATA" \
            --port="$MYSQL_PORT" --bind-address=127.0.0.1 --socket="$SOCK" \
            --pid-file="$MYSQL_PID" --log-error="$MYSQL_ERR" --skip-log-bin \
            --skip-name-resolve --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
            "${extra[@]}"
    ) </dev/null >>"$MYSQL_OUT" 2>&1 &
    pid=$! # the subshell execs setsid, which execs mariadbd: the same pid
    wait_ready "$pid" mysql_ready "$MYSQL_ERR" mariadb
    say "mariadb: started (pid $pid, 127.0.0.1:$MYSQL_PORT, socket $SOCK, data $MYSQL_DATA)"
}

password() {
    if [[ ! -s $PW_FILE ]]; then
        (umask 077 && openssl rand -hex 24 >"$PW_FILE.tmp") || die "openssl rand failed"
        mv -f -- "$PW_FILE.tmp" "$PW_FILE" || die "cannot create $PW_FILE"
    fi
    chmod 0600 -- "$PW_FILE"
    local pw
    read -r pw <"$PW_FILE" || true
    # The value goes into SQL text below, so it must be exactly what we made.
    [[ $pw =~ ^[0-9a-f]{32,128}$ ]] || die "$PW_FILE does not hold a hex password; delete it to make a new one"
    printf '%s\n' "$pw"
}

# The application account gets data rights on its own database only: chunkd
# and chunkctl never change the schema; migrations run as the admin.
provision() {
    local pw=$1 host
    {
        printf "CREATE DATABASE IF NOT EXISTS \`%s\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;\n" "$DB_NAME"
        for host in 127.0.0.1 localhost; do
            printf "CREATE USER IF NOT EXISTS '%s'@'%s' IDENTIFIED BY '%s';\n" "$DB_USER" "$host" "$pw"
            printf "ALTER USER '%s'@'%s' IDENTIFIED BY '%s';\n" "$DB_USER" "$host" "$pw"
            printf "GRANT SELECT, INSERT, UPDATE, DELETE ON \`%s\`.* TO '%s'@'%s';\n" \
                "$DB_NAME" "$DB_USER" "$host"
        done
    } | mysql_admin || die "creating database $DB_NAME and user $DB_USER failed"
}

migrate() {
    local f version has_table n applied=0
    for f in "$ROOT"/sql/*.sql; do
        [[ -e $f ]] || continue
        version=$(basename -- "$f" .sql)
        [[ $version =~ ^[A-Za-z0-9_.-]+$ ]] || die "migration name '$version' has unexpected characters"
        has_table=$(mysql_admin -e "SELECT COUNT(*) FROM information_schema.tables
            WHERE table_schema = '$DB_NAME' AND table_name = 'schema_migrations'") ||
            die "cannot read information_schema"
        if [[ $has_table == 1 ]]; then
            n=$(mysql_admin "$DB_NAME" -e "SELECT COUNT(*) FROM schema_migrations
                WHERE version = '$version'") || die "cannot read schema_migrations"
            [[ $n == 0 ]] || continue
        fi
        mysql_admin "$DB_NAME" <"$f" || die "applying $f failed"
        # Recorded here as well, so a file that forgets to record itself is
        # still applied only once.
        mysql_admin "$DB_NAME" -e "INSERT IGNORE INTO schema_migrations (version)
            VALUES ('$version')" || die "recording $version in schema_migrations failed"
        say "mariadb: applied $(basename -- "$f")"
        applied=$((applied + 1))
    done
    ((applied > 0)) || say "mariadb: schema up to date"
}

write_env() {
    local pw=$1 tmp=$ENV_FILE.tmp
    (
        umask 077
        cat >"$tmp" <<EOF
# Written by scripts/stack.sh for the stack in $D.
# Load with: set -a; . $ENV_FILE; set +a
CHUNKD_REDIS_HOST=127.0.0.1
CHUNKD_REDIS_PORT=$REDIS_PORT
CHUNKD_MYSQL_HOST=127.0.0.1
CHUNKD_MYSQL_PORT=$MYSQL_PORT
CHUNKD_MYSQL_USER=$DB_USER
CHUNKD_MYSQL_PASSWORD=$pw
CHUNKD_MYSQL_DATABASE=$DB_NAME
EOF
    ) || die "cannot write $tmp"
    mv -f -- "$tmp" "$ENV_FILE" || die "cannot write $ENV_FILE"
}

find_server_bins() {
    REDIS_SERVER=$(find_bin redis-server redis-server)
    REDIS_CLI=$(find_bin redis-cli redis-tools)
    MARIADBD=$(find_bin mariadbd mariadb-server)
    INSTALL_DB=$(find_bin mariadb-install-db mariadb-server)
    MARIADB=$(find_bin mariadb mariadb-client)
    MARIADB_ADMIN=$(find_bin mariadb-admin mariadb-client)
}

cmd_up() {
    find_server_bins
    command -v openssl >/dev/null || die "openssl not found; install the Debian package openssl"
    command -v flock >/dev/null || die "flock not found; install the Debian package util-linux"
    mkdir -p -- "$D" || die "cannot create $D"
    chmod 0700 -- "$D"
    : >>"$MARKER"
    lock_stack
    load_settings up
    local running=0
    pid_of "$REDIS_PID" redis-server >/dev/null && running=1
    pid_of "$MYSQL_PID" mariadbd >/dev/null && running=1
    if ((running)); then
        [[ $REDIS_PORT == "${STATE_REDIS:-$REDIS_PORT}" && $MYSQL_PORT == "${STATE_MYSQL:-$MYSQL_PORT}" ]] ||
            die "the stack in $D runs on ports ${STATE_REDIS}/${STATE_MYSQL}; run 'stack.sh down' before changing them"
    else
        choose_socket
    fi
    write_state
    redis_up
    mysql_up
    local pw
    pw=$(password)
    provision "$pw"
    migrate
    write_env "$pw"
    say "ready; load the settings with: set -a; . $ENV_FILE; set +a"
}

redis_down() {
    local pid
    if ! pid=$(pid_of "$REDIS_PID" redis-server); then
        say "redis: not running"
        return 0
    fi
    # Only ask the server on our port to stop if it is the one we started.
    local asked=0
    if [[ $(redis_cli info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p') == "$pid" ]]; then
        redis_cli shutdown >/dev/null 2>&1 || true
        asked=1
    fi
    if ((!asked)) || ! wait_gone "$pid" 30; then
        say "redis: still running after 'shutdown'; sending SIGTERM to $pid"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 15; then
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || die "redis (pid $pid) does not stop"
        fi
    fi
    say "redis: stopped"
}

mysql_down() {
    local pid
    if ! pid=$(pid_of "$MYSQL_PID" mariadbd); then
        say "mariadb: not running"
        return 0
    fi
    "$MARIADB_ADMIN" --no-defaults --protocol=socket --socket="$SOCK" --user="$(id -un)" \
        --connect-timeout=5 --shutdown-timeout=60 shutdown >/dev/null 2>&1 || true
    if ! wait_gone "$pid" 60; then
        say "mariadb: still running after 'shutdown'; sending SIGTERM to $pid"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 30; then
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || die "mariadb (pid $pid) does not stop"
        fi
    fi
    say "mariadb: stopped"
}

cmd_down() {
    if [[ ! -d $D ]]; then
        say "no stack in $D"
        return 0
    fi
    find_server_bins
    lock_stack
    load_settings down
    redis_down
    mysql_down
}

cmd_status() {
    local pid ok=1
    if [[ ! -d $D ]]; then
        say "no stack in $D"
        exit 3
    fi
    find_server_bins
    load_settings status
    if pid=$(pid_of "$REDIS_PID" redis-server); then
        if redis_ready; then
            echo "redis:   running, pid $pid, 127.0.0.1:$REDIS_PORT, data $REDIS_DIR"
        else
            echo "redis:   pid $pid alive but not answering on 127.0.0.1:$REDIS_PORT"
            ok=0
        fi
    else
        echo "redis:   stopped"
        ok=0
    fi
    if pid=$(pid_of "$MYSQL_PID" mariadbd); then
        if mysql_ready; then
            echo "mariadb: running, pid $pid, 127.0.0.1:$MYSQL_PORT, socket $SOCK, data $MYSQL_DATA"
        else
            echo "mariadb: pid $pid alive but not answering on $SOCK"
            ok=0
        fi
    else
        echo "mariadb: stopped"
        ok=0
    fi
    echo "env:     $ENV_FILE"
    ((ok)) || exit 3
}

cmd_env() {
    [[ -r $ENV_FILE ]] || die "$ENV_FILE does not exist yet; run 'scripts/stack.sh up'"
    printf '%s\n' "$ENV_FILE"
}

cmd_destroy() {
    [[ -d $D ]] || return 0
    [[ -e $MARKER ]] || die "$D was not made by stack.sh ($MARKER missing); not deleting it"
    cmd_down
    load_settings down
    if [[ $SOCK != "$D/mysqld.sock" ]]; then
        rm -rf -- "$(dirname -- "$SOCK")"
    fi
    rm -rf -- "$D"
    say "deleted $D"
}

case ${1:-} in
up)
    case ${2:-} in
    '') cmd_up ;;
    --fresh) (cmd_destroy) && cmd_up ;;
    *) usage ;;
    esac
    ;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
destroy) cmd_destroy ;;
*) usage ;;
esac
