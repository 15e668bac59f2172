-- Grows the table: a column, a check and an index.
ALTER TABLE items_8 ADD COLUMN status TEXT NOT NULL DEFAULT 'open';
ALTER TABLE items_8 ADD CONSTRAINT items_8_amount_check CHECK (amount >= 0);
CREATE INDEX items_8_status_idx ON items_8 (status);
