-- Grows the table: a column, a check and an index.
ALTER TABLE items_9 ADD COLUMN status TEXT NOT NULL DEFAULT 'open';
ALTER TABLE items_9 ADD CONSTRAINT items_9_amount_check CHECK (amount >= 0);
CREATE INDEX items_9_status_idx ON items_9 (status);
