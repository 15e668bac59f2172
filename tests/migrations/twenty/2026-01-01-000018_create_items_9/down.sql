DROP TABLE items_9;
