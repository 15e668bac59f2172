DROP TABLE notes;
DROP TABLE tags;
DROP TABLE categories;
