-- Counting a user's uploads in progress (max_uploads_per_user) reads only
-- that user's 'uploading' rows.
CREATE INDEX IF NOT EXISTS documents_user_status ON documents (user_id, status);

INSERT IGNORE INTO schema_migrations (version) VALUES ('002_user_status_index');
