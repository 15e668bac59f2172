-- An index build, a column added with a default, a type change and a foreign key.
CREATE INDEX notes_n_idx ON notes (n);
ALTER TABLE notes ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE notes ALTER COLUMN n TYPE BIGINT;
ALTER TABLE notes ADD CONSTRAINT notes_author_fk FOREIGN KEY (author_id) REFERENCES authors (id);
CREATE TABLE labels (id INTEGER PRIMARY KEY, note_id INTEGER REFERENCES notes (id));
CREATE INDEX labels_note_idx ON labels (note_id);
