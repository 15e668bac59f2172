ALTER TABLE tasks ADD COLUMN priority SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ALTER COLUMN priority TYPE INTEGER;
CREATE INDEX tasks_priority_idx ON tasks (priority);
