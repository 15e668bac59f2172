DROP TABLE items_5;
