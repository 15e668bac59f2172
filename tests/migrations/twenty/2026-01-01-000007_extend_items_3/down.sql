ALTER TABLE items_3 DROP COLUMN status;
ALTER TABLE items_3 DROP CONSTRAINT items_3_amount_check;
