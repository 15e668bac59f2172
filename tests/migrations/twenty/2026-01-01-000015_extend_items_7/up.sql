-- Grows the table: a column, a check and an index.
ALTER TABLE items_7 ADD COLUMN status TEXT NOT NULL DEFAULT 'open';
ALTER TABLE items_7 ADD CONSTRAINT items_7_amount_check CHECK (amount >= 0);
CREATE INDEX items_7_status_idx ON items_7 (status);
