DROP INDEX tasks_status_idx;
CREATE INDEX tasks_open_idx ON tasks (project_id) WHERE status <> 'done';
