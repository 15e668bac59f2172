-- Grows the table: a column, a check and an index.
ALTER TABLE items_6 ADD COLUMN status TEXT NOT NULL DEFAULT 'open';
ALTER TABLE items_6 ADD CONSTRAINT items_6_amount_check CHECK (amount >= 0);
CREATE INDEX items_6_status_idx ON items_6 (status);
