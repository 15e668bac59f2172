-- A status replaces the done flag.
ALTER TABLE tasks ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'open';
UPDATE tasks SET status = 'done' WHERE done;
DROP INDEX tasks_done_idx;
ALTER TABLE tasks DROP COLUMN done;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK (status IN ('open', 'doing', 'done'));
CREATE INDEX tasks_status_idx ON tasks (status);
