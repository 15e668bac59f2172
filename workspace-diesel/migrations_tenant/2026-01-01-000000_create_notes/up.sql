-- The tenant schema of this crate's examples and documentation: one table of notes.
-- Runs once per tenant schema, with that schema alone on the search_path.
CREATE TABLE notes (
    id SERIAL PRIMARY KEY,
    title TEXT NOT NULL,
    body TEXT NOT NULL DEFAULT ''
);
