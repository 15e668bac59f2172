CREATE TABLE audit_log (
    id SERIAL PRIMARY KEY,
    account_id INTEGER REFERENCES accounts (id),
    action TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
DROP TABLE events;
