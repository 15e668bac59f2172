-- Grows the table: a column, a check and an index.
ALTER TABLE items_1 ADD COLUMN status TEXT NOT NULL DEFAULT 'open';
ALTER TABLE items_1 ADD CONSTRAINT items_1_amount_check CHECK (amount >= 0);
CREATE INDEX items_1_status_idx ON items_1 (status);
