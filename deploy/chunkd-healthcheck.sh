#!/bin/bash
# Exits 0 when chunkd's admin endpoint answers GET /health with 200, i.e.
# chunkd runs and reaches Redis and MySQL; 1 otherwise, with the reason on
# stderr. Needs only bash (its /dev/tcp), so the slim image carries no curl.
# The caller bounds the time (Docker HEALTHCHECK --timeout); reads give up
# after CHUNKD_HEALTHCHECK_TIMEOUT_S (3) seconds on their own too.
#
# Address: $CHUNKD_ADMIN_LISTEN (host:port, [v6]:port) as chunkd reads it; a
# wildcard host (0.0.0.0, ::, empty) is asked on loopback.
set -u

addr=${CHUNKD_ADMIN_LISTEN:-}
if [[ -z $addr ]]; then
    echo "chunkd-healthcheck: CHUNKD_ADMIN_LISTEN is not set (the admin endpoint is off)" >&2
    exit 1
fi
port=${addr##*:}
host=${addr%:*}
host=${host#[}
host=${host%]}
case $host in
'' | 0.0.0.0 | '*') host=127.0.0.1 ;;
:: | ::0) host=::1 ;;
esac
if ! [[ $port =~ ^[0-9]+$ ]]; then
    echo "chunkd-healthcheck: no port in CHUNKD_ADMIN_LISTEN='$addr'" >&2
    exit 1
fi
timeout_s=${CHUNKD_HEALTHCHECK_TIMEOUT_S:-3}

if ! { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
    echo "chunkd-healthcheck: cannot connect to $host:$port" >&2
    exit 1
fi
printf 'GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3 || exit 1
if ! IFS= read -r -t "$timeout_s" status <&3 2>/dev/null; then
    echo "chunkd-healthcheck: no answer from $host:$port (closed, or silent for ${timeout_s}s)" >&2
    exit 1
fi
status=${status%$'\r'}
if [[ $status != "HTTP/1."[01]" 200 "* ]]; then
    # The body says which backend is missing.
    body=$(timeout "$timeout_s" cat <&3 2>/dev/null | tr -d '\r' | sed '1,/^$/d')
    echo "chunkd-healthcheck: $status ${body//$'\n'/ }" >&2
    exit 1
fi
exit 0
