-- The column comes back empty: its data is gone (what a snapshot keeps).
ALTER TABLE notes ADD COLUMN body TEXT NOT NULL DEFAULT '';
