DROP TABLE workspace_run_tenants;
DROP TABLE workspace_runs;
