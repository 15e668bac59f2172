-- One composite index replaces two.
DROP INDEX tasks_due_date_idx;
DROP INDEX tasks_project_id_idx;
CREATE INDEX tasks_project_due_idx ON tasks (project_id, due_date);
