-- Grows the table: a column, a check and an index.
ALTER TABLE items_2 ADD COLUMN status TEXT NOT NULL DEFAULT 'open';
ALTER TABLE items_2 ADD CONSTRAINT items_2_amount_check CHECK (amount >= 0);
CREATE INDEX items_2_status_idx ON items_2 (status);
