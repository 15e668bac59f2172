ALTER TABLE items_5 DROP COLUMN status;
ALTER TABLE items_5 DROP CONSTRAINT items_5_amount_check;
