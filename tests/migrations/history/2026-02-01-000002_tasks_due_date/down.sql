DROP INDEX tasks_due_date_idx;
ALTER TABLE tasks DROP COLUMN due_date;
