DROP TABLE items_3;
