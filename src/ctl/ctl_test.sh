#!/usr/bin/env bash
# chunkctl against the real test stack: every command, its output, what it
# leaves in the users table, and its exit status on bad input.
#
#   ctl_test.sh PATH_TO_CHUNKCTL    (CHUNKD_TEST_STACK_ENV names stack.env)
set -euo pipefail

CTL=${1:?usage: ctl_test.sh PATH_TO_CHUNKCTL}
: "${CHUNKD_TEST_STACK_ENV:?not set; run through ctest}"
set -a
# shellcheck source=/dev/null
. "$CHUNKD_TEST_STACK_ENV"
set +a

ERR_FILE=$(mktemp)
trap 'rm -f "$ERR_FILE"' EXIT

FAILED=0
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    FAILED=$((FAILED + 1))
}
expect_eq() { [[ $2 == "$3" ]] || fail "$1: expected '$3', got '$2'"; }

# sql QUERY: one row of the query's answer, tab-separated, as the app account.
sql() {
    mariadb --no-defaults --protocol=tcp -h "$CHUNKD_MYSQL_HOST" -P "$CHUNKD_MYSQL_PORT" \
        -u "$CHUNKD_MYSQL_USER" -p"$CHUNKD_MYSQL_PASSWORD" -N -B "$CHUNKD_MYSQL_DATABASE" \
        -e "$1"
}
sha256_hex() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# run EXPECTED_STATUS ARGS...: runs chunkctl, keeps stdout in OUT and stderr
# in ERR, and checks the exit status.
run() {
    local want=$1 rc=0
    shift
    OUT=$("$CTL" "$@" 2>"$ERR_FILE") || rc=$?
    ERR=$(cat "$ERR_FILE")
    [[ $rc == "$want" ]] || fail "chunkctl $*: exit $rc, expected $want (stderr: $ERR)"
}

name=ctltest-$$-$RANDOM

# add: two key=value lines; only the SHA-256 of the credential is stored.
run 0 user add "$name"
id=$(sed -n 's/^user_id=//p' <<<"$OUT")
cred=$(sed -n 's/^credential=//p' <<<"$OUT")
[[ $id =~ ^[1-9][0-9]*$ ]] || { fail "add printed no user_id: $OUT"; exit 1; }
[[ $cred =~ ^[0-9a-f]{64}$ ]] || fail "credential is not 64 hex digits: $cred"
expect_eq "lines printed by add" "$(wc -l <<<"$OUT")" 2
expect_eq "stored row after add" "$(sql "SELECT name, credential_hash, disabled FROM users WHERE id = $id")" \
    "$name	$(sha256_hex "$cred")	0"

run 1 user add "$name"
[[ $ERR == *"already exists"* ]] || fail "duplicate add: unexpected message: $ERR"

# --json add: one object with the same fields.
run 0 --json user add "$name-j"
[[ $OUT =~ ^\{\"user_id\":([0-9]+),\"name\":\"$name-j\",\"credential\":\"([0-9a-f]{64})\"\}$ ]] ||
    fail "--json add: unexpected output: $OUT"
jid=${BASH_REMATCH[1]:-0} jcred=${BASH_REMATCH[2]:-}
expect_eq "hash after --json add" "$(sql "SELECT credential_hash FROM users WHERE id = $jid")" \
    "$(sha256_hex "$jcred")"

# disable / enable flip the flag and are idempotent.
run 0 user disable "$id"
expect_eq "disable output" "$OUT" "user_id=$id
disabled=1"
expect_eq "disabled flag" "$(sql "SELECT disabled FROM users WHERE id = $id")" 1
run 0 user disable "$id"
run 0 user list
grep -Eq "^$id +disabled +[0-9T:-]+ $name\$" <<<"$OUT" || fail "list does not show $id disabled: $OUT"
run 0 --json user enable "$id"
expect_eq "--json enable output" "$OUT" "{\"user_id\":$id,\"disabled\":false}"
expect_eq "enabled flag" "$(sql "SELECT disabled FROM users WHERE id = $id")" 0

# rotate replaces the stored hash; the old credential no longer matches.
run 0 user rotate "$id"
cred2=$(sed -n 's/^credential=//p' <<<"$OUT")
[[ $cred2 =~ ^[0-9a-f]{64}$ && $cred2 != "$cred" ]] || fail "rotate gave no new credential: $OUT"
expect_eq "hash after rotate" "$(sql "SELECT credential_hash FROM users WHERE id = $id")" \
    "$(sha256_hex "$cred2")"

run 0 --json user list
[[ $OUT == "["*"{\"user_id\":$id,\"name\":\"$name\",\"disabled\":false,\"created_at\":\""* ]] ||
    fail "--json list lacks user $id: $OUT"

# Unknown ids fail; bad arguments are usage errors and touch nothing.
run 1 user disable 9223372036854775807
[[ $ERR == *"no user with id"* ]] || fail "unknown id: unexpected message: $ERR"
run 1 user rotate 9223372036854775807
run 2 user disable 0
run 2 user disable 9223372036854775808
run 2 user enable abc
run 2 user add "bad name"
run 2 user add "$(printf 'x%.0s' {1..65})"
run 2 user add
run 2 user frobnicate 1
run 2 --no-such-flag user list
expect_eq "users named 'bad name'" "$(sql "SELECT COUNT(*) FROM users WHERE name = 'bad name'")" 0

# A wrong password is refused with the server's reason.
CHUNKD_MYSQL_PASSWORD=wrong run 1 user list
[[ $ERR == *"Access denied"* ]] || fail "wrong password: unexpected message: $ERR"

if ((FAILED)); then
    echo "ctl_test: $FAILED check(s) failed" >&2
    exit 1
fi
echo "ctl_test: all checks passed"
