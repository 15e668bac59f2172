-- Grows the table: a column, a check and an index.
ALTER TABLE items_3 ADD COLUMN status TEXT NOT NULL DEFAULT 'open';
ALTER TABLE items_3 ADD CONSTRAINT items_3_amount_check CHECK (amount >= 0);
CREATE INDEX items_3_status_idx ON items_3 (status);
