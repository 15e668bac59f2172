ALTER TABLE items_1 DROP COLUMN status;
ALTER TABLE items_1 DROP CONSTRAINT items_1_amount_check;
