-- The demo's users: a shared table with a foreign key to the registry (a user belongs to one
-- workspace), read by the user-workspace resolver at every authenticated request.
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX users_workspace_id_idx ON users (workspace_id);
