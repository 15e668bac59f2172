DROP TABLE items_8;
