# Shared by run.sh and test.sh (sourced, not run): the Debian packages chunkd
# needs, the CMake build, and small process helpers.
# shellcheck shell=bash

CHUNKD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHUNKD_JOBS=${CHUNKD_JOBS:-2}

# Everything to build, test and run chunkd with its stack. openssl (the
# command) is here because stack.sh makes the MySQL password with it; clang
# and libclang-rt-dev (libFuzzer, only recommended by clang) for fuzz.sh;
# chromium for the web UI's browser tests (tests/browser); docker-compose
# and python3-yaml for the checks of deploy/ (tests/deploy, no engine needed);
# valgrind for a test that only it can judge (tests/integration).
CHUNKD_PACKAGES=(build-essential cmake pkg-config libhiredis-dev libjansson-dev
    libmariadb-dev libssl-dev libcmocka-dev redis-server mariadb-server mariadb-client
    haproxy openssl clang libclang-rt-dev chromium docker-compose python3-yaml valgrind)
# Node.js runs the web tests. Asked for only when the commands are missing:
# a machine may carry a Node.js of its own (whose package brings npm), which
# Debian's nodejs and npm packages would conflict with.
command -v node >/dev/null || CHUNKD_PACKAGES+=(nodejs)
command -v npm >/dev/null || CHUNKD_PACKAGES+=(npm)

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() {
    log "$*"
    exit 1
}

# Runs a command as root: directly when we are root, else through sudo. Only
# apt-get needs this; nothing else in these scripts does.
as_root() {
    if (($(id -u) == 0)); then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "'$*' needs root: run this script as root or install sudo"
    fi
}

missing_packages() {
    local p status
    for p in "${CHUNKD_PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) || status=
        [[ $status == "install ok installed" ]] || printf '%s\n' "$p"
    done
}

ensure_packages() {
    command -v dpkg-query >/dev/null || die "dpkg-query not found; these scripts expect Debian 12"
    local -a missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        log "Debian packages: all present"
        return 0
    fi
    log "installing Debian packages: ${missing[*]}"
    # sudo drops the environment, so the variable goes through env.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
        die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" ||
        die "apt-get install ${missing[*]} failed"
}

# cmake_build DIR [CMAKE_ARGS...]: configures DIR from the repo and builds it.
cmake_build() {
    local dir=$1
    shift
    log "configuring $dir"
    cmake -S "$CHUNKD_ROOT" -B "$dir" "$@" || die "configuring $dir failed"
    log "building $dir"
    cmake --build "$dir" -j "$CHUNKD_JOBS" || die "building $dir failed"
}

# alive PID: the process exists and is not a zombie.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# wait_gone PID SECONDS
wait_gone() {
    local end=$((SECONDS + $2))
    while alive "$1"; do
        ((SECONDS < end)) || return 1
        sleep 0.1
    done
}

# A server started from here must not keep our descriptors (a caller reading
# our output would wait for it). Call in the subshell that execs the server.
close_fds() {
    local fd
    for fd in "/proc/$BASHPID/fd/"*; do
        fd=${fd##*/}
        if ((fd > 2)); then exec {fd}>&-; fi
    done
}

# tcp_open HOST PORT: something accepts connections there.
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
