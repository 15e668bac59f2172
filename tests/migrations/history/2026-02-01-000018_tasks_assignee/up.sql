ALTER TABLE tasks ADD COLUMN assignee_id BIGINT REFERENCES accounts (id) ON DELETE SET NULL;
CREATE INDEX tasks_assignee_idx ON tasks (assignee_id);
