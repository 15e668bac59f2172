-- A destructive migration: a column and its data dropped.
ALTER TABLE notes DROP COLUMN body;
