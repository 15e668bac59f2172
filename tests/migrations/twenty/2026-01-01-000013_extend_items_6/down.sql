ALTER TABLE items_6 DROP COLUMN status;
ALTER TABLE items_6 DROP CONSTRAINT items_6_amount_check;
