-- Two tables the next migration changes.
CREATE TABLE authors (id INTEGER PRIMARY KEY);
CREATE TABLE notes (id SERIAL PRIMARY KEY, n INTEGER, author_id INTEGER, title TEXT NOT NULL);
