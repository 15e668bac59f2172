DROP INDEX tasks_open_idx;
CREATE INDEX tasks_status_idx ON tasks (status);
