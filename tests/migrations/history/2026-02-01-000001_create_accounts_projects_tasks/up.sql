-- A task tracker's first schema. The history that follows is what a year of product work
-- leaves behind: ids grown to bigint, columns replaced, indexes swapped, a table dropped.
CREATE TABLE accounts (
    id SERIAL PRIMARY KEY,
    email VARCHAR(200) NOT NULL,
    name TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX accounts_email_idx ON accounts (email);
CREATE TABLE projects (
    id SERIAL PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES accounts (id),
    name VARCHAR(100) NOT NULL,
    archived BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX projects_owner_id_idx ON projects (owner_id);
CREATE TABLE tasks (
    id SERIAL PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    title VARCHAR(200) NOT NULL,
    done BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX tasks_project_id_idx ON tasks (project_id);
CREATE INDEX tasks_done_idx ON tasks (done);
