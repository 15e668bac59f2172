-- The record of fleet runs: one row per run (who, when, which selection, how it ended) and one
-- per tenant it took (its versions before, what the run applied or reverted, how long, how it
-- ended), so a run can be listed and reverted as a whole.

CREATE TABLE workspace_runs (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('migrate', 'revert')),
    reverts BIGINT,
    started_by TEXT NOT NULL DEFAULT CURRENT_USER,
    started_at TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now(),
    finished_at TIMESTAMPTZ,
    selection TEXT NOT NULL,
    outcome TEXT CHECK (outcome IN ('succeeded', 'failed', 'stopped'))
);

CREATE TABLE workspace_run_tenants (
    run_id BIGINT NOT NULL REFERENCES workspace_runs (id) ON DELETE CASCADE,
    schema_name TEXT NOT NULL,
    before_versions TEXT[] NOT NULL,
    versions TEXT[] NOT NULL DEFAULT '{}',
    outcome TEXT NOT NULL DEFAULT 'not_started',
    sqlstate TEXT,
    message TEXT,
    duration_ms BIGINT,
    PRIMARY KEY (run_id, schema_name)
);
