-- The snapshot schemas stay (drop them with `prune_snapshots` first); the `restoring` state
-- stays in the enum (PostgreSQL cannot remove an enum value).
DROP TABLE workspace_snapshots;
