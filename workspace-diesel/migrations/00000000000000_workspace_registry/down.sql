DROP TABLE workspace_spares;
DROP TABLE workspace_migrations;
DROP TABLE workspaces;
DROP FUNCTION workspace_touch_updated_at();
DROP TYPE workspace_status;
