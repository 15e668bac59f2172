ALTER TABLE notes ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
CREATE INDEX notes_priority_idx ON notes (priority);
