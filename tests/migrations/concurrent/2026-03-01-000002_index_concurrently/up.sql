CREATE INDEX CONCURRENTLY IF NOT EXISTS notes_title_idx ON notes (title);
