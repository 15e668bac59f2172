DROP INDEX tasks_status_idx;
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD COLUMN done BOOLEAN NOT NULL DEFAULT false;
UPDATE tasks SET done = (status = 'done');
CREATE INDEX tasks_done_idx ON tasks (done);
ALTER TABLE tasks DROP COLUMN status;
