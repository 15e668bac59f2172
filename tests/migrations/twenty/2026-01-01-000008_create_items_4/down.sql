DROP TABLE items_4;
