DROP TABLE items_1;
