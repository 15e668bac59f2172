ALTER TABLE items_2 DROP COLUMN status;
ALTER TABLE items_2 DROP CONSTRAINT items_2_amount_check;
