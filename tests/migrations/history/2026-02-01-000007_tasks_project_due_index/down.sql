DROP INDEX tasks_project_due_idx;
CREATE INDEX tasks_project_id_idx ON tasks (project_id);
CREATE INDEX tasks_due_date_idx ON tasks (due_date);
