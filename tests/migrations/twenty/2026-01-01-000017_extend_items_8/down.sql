ALTER TABLE items_8 DROP COLUMN status;
ALTER TABLE items_8 DROP CONSTRAINT items_8_amount_check;
