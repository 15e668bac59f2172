DROP TABLE items_6;
