CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    account_id INTEGER REFERENCES accounts (id) ON DELETE SET NULL,
    kind TEXT NOT NULL,
    payload JSONB NOT NULL DEFAULT '{}',
    at TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX events_at_idx ON events (at);
CREATE INDEX events_account_id_idx ON events (account_id);
DROP TABLE audit_log;
