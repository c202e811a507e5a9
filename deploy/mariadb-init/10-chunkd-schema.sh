# shellcheck shell=bash
# Sourced by the MariaDB image's entrypoint on the first start of an empty
# data volume, after it has created database $MARIADB_DATABASE and the account
# $MARIADB_USER with every privilege on it. Keep this file non-executable: the
# entrypoint runs executable files instead of sourcing them, and then its
# helpers (docker_process_sql, mysql_note) are missing.
#
# Applies chunkd's schema, the same sql/*.sql files in the same name order as
# scripts/stack.sh (compose mounts sql/ at /chunkd-sql), then narrows the
# application account to row access: chunkd never changes the schema, so a
# stolen chunkd password cannot either. Later migrations are applied by an
# operator (docs/DEPLOY.md, "Upgrades").

chunkd_schema_files=(/chunkd-sql/*.sql)
if [[ ! -e ${chunkd_schema_files[0]} ]]; then
    mysql_error "chunkd: no schema files in /chunkd-sql (is ../sql mounted there?)"
fi
# The database's default collation as scripts/stack.sh creates it: tables
# name theirs, but a later migration that does not would otherwise compare
# names differently here.
docker_process_sql --database=mysql <<SQL
ALTER DATABASE \`${MARIADB_DATABASE}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
SQL
for chunkd_f in $(printf '%s\n' "${chunkd_schema_files[@]}" | LC_ALL=C sort); do
    chunkd_v=${chunkd_f##*/}
    chunkd_v=${chunkd_v%.sql}
    [[ $chunkd_v =~ ^[A-Za-z0-9_.-]+$ ]] ||
        mysql_error "chunkd: migration name '$chunkd_v' has unexpected characters"
    mysql_note "chunkd: applying ${chunkd_f##*/}"
    docker_process_sql --database="$MARIADB_DATABASE" <"$chunkd_f"
    # Recorded here too, as scripts/stack.sh does, for a file that forgets.
    docker_process_sql --database="$MARIADB_DATABASE" <<SQL
INSERT IGNORE INTO schema_migrations (version) VALUES ('${chunkd_v}');
SQL
done

mysql_note "chunkd: limiting '$MARIADB_USER' to SELECT, INSERT, UPDATE, DELETE on $MARIADB_DATABASE"
docker_process_sql --database=mysql <<SQL
REVOKE ALL PRIVILEGES ON \`${MARIADB_DATABASE}\`.* FROM '${MARIADB_USER}'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE ON \`${MARIADB_DATABASE}\`.* TO '${MARIADB_USER}'@'%';
SQL
unset chunkd_f chunkd_v chunkd_schema_files
