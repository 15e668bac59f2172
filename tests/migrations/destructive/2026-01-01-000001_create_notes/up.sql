-- The example tenant schema (a notes app), used by the quick start, the tests and the benchmarks.
-- Runs once per tenant schema, with that schema alone on the search_path.

CREATE TABLE categories (
    id SERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE tags (
    id SERIAL PRIMARY KEY,
    label TEXT NOT NULL UNIQUE
);

CREATE TABLE notes (
    id SERIAL PRIMARY KEY,
    category_id INTEGER REFERENCES categories (id) ON DELETE SET NULL,
    tag_id INTEGER REFERENCES tags (id) ON DELETE SET NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now()
);

CREATE INDEX notes_category_id_idx ON notes (category_id);
CREATE INDEX notes_tag_id_idx ON notes (tag_id);
CREATE INDEX notes_created_at_idx ON notes (created_at);
