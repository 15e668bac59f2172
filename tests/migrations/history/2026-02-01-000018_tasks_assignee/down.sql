ALTER TABLE tasks DROP COLUMN assignee_id;
