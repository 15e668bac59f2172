ALTER TABLE notes DROP CONSTRAINT notes_label_id_fkey;
DROP INDEX notes_label_id_idx;
ALTER TABLE notes DROP COLUMN label_id;
DROP TABLE labels;
