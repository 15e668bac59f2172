-- Grows the table: a column, a check and an index.
ALTER TABLE items_5 ADD COLUMN status TEXT NOT NULL DEFAULT 'open';
ALTER TABLE items_5 ADD CONSTRAINT items_5_amount_check CHECK (amount >= 0);
CREATE INDEX items_5_status_idx ON items_5 (status);
