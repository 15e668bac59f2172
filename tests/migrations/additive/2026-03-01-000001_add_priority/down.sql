DROP INDEX notes_priority_idx;
ALTER TABLE notes DROP COLUMN priority;
