ALTER TABLE items_9 DROP COLUMN status;
ALTER TABLE items_9 DROP CONSTRAINT items_9_amount_check;
