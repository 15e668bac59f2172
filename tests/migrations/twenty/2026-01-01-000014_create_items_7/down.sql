DROP TABLE items_7;
