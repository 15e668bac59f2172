DROP INDEX tasks_priority_idx;
ALTER TABLE tasks DROP COLUMN priority;
