-- An additive migration inside the tenant: a table, a column, an index and a foreign key
-- (the index and the constraint are DDL that Citus forwards to the workers as sent).
CREATE TABLE labels (
    id SERIAL PRIMARY KEY,
    name TEXT NOT NULL
);
ALTER TABLE notes ADD COLUMN label_id INTEGER;
CREATE INDEX notes_label_id_idx ON notes (label_id);
ALTER TABLE notes ADD CONSTRAINT notes_label_id_fkey
    FOREIGN KEY (label_id) REFERENCES labels (id) ON DELETE CASCADE;
