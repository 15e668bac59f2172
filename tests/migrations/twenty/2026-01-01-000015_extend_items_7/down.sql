ALTER TABLE items_7 DROP COLUMN status;
ALTER TABLE items_7 DROP CONSTRAINT items_7_amount_check;
