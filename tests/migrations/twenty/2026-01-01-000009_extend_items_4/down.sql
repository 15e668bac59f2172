ALTER TABLE items_4 DROP COLUMN status;
ALTER TABLE items_4 DROP CONSTRAINT items_4_amount_check;
