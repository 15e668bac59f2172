ALTER TABLE tasks ADD COLUMN due_date DATE;
CREATE INDEX tasks_due_date_idx ON tasks (due_date);
