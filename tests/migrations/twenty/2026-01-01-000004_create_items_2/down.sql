DROP TABLE items_2;
