-- A table of its own, referencing notes.
CREATE TABLE items_5 (
    id BIGSERIAL PRIMARY KEY,
    note_id INTEGER REFERENCES notes (id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    amount NUMERIC(12, 2) NOT NULL DEFAULT 0
);
CREATE INDEX items_5_note_id_idx ON items_5 (note_id);
