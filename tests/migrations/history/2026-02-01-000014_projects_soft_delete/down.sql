DROP INDEX projects_live_idx;
ALTER TABLE projects ADD COLUMN archived BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE projects DROP COLUMN deleted_at;
