-- Rewrites both tables and rebuilds their indexes.
ALTER TABLE tasks ALTER COLUMN id TYPE BIGINT;
ALTER TABLE comments ALTER COLUMN task_id TYPE BIGINT;
ALTER TABLE comments ALTER COLUMN id TYPE BIGINT;
