-- Grows the table: a column, a check and an index.
ALTER TABLE items_4 ADD COLUMN status TEXT NOT NULL DEFAULT 'open';
ALTER TABLE items_4 ADD CONSTRAINT items_4_amount_check CHECK (amount >= 0);
CREATE INDEX items_4_status_idx ON items_4 (status);
