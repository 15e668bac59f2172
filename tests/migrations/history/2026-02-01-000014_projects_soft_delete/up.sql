ALTER TABLE projects ADD COLUMN deleted_at TIMESTAMPTZ;
ALTER TABLE projects DROP COLUMN archived;
CREATE INDEX projects_live_idx ON projects (owner_id) WHERE deleted_at IS NULL;
