-- chunkd schema, version 1.
-- Applied in file-name order by scripts/stack.sh (migrate); each file records
-- itself in schema_migrations so that applying twice is harmless.

CREATE TABLE IF NOT EXISTS schema_migrations (
    version     VARCHAR(64)  NOT NULL PRIMARY KEY,
    applied_at  DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS users (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name             VARCHAR(64)     NOT NULL,
    -- Hex SHA-256 of the credential. Credentials are 256-bit random tokens
    -- made by chunkctl, so a fast hash is enough; the token itself is never
    -- stored.
    credential_hash  CHAR(64)        NOT NULL,
    disabled         TINYINT(1)      NOT NULL DEFAULT 0,
    created_at       DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at       DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                     ON UPDATE CURRENT_TIMESTAMP(3),
    UNIQUE KEY users_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS documents (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id          BIGINT UNSIGNED NOT NULL,
    -- The user's name for the file: metadata only, never part of a path.
    filename         VARCHAR(255)    NOT NULL,
    filesize         BIGINT UNSIGNED NOT NULL,
    -- SHA-256 the client declared at upload start (NULL if none) and the one
    -- the server computed at completion.
    declared_sha256  CHAR(64)        NULL,
    sha256           CHAR(64)        NULL,
    status           ENUM('uploading','completed','failed') NOT NULL DEFAULT 'uploading',
    -- Relative to the storage directory; set when completed.
    file_path        VARCHAR(512)    NULL,
    failure_reason   VARCHAR(255)    NULL,
    created_at       DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at       DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                     ON UPDATE CURRENT_TIMESTAMP(3),
    completed_at     DATETIME(3)     NULL,
    KEY documents_user (user_id, id),
    KEY documents_status (status, updated_at),
    CONSTRAINT documents_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
        ON DELETE RESTRICT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT IGNORE INTO schema_migrations (version) VALUES ('001_init');
