-- Snapshots taken before a tenant is migrated: each a schema named `_snap_<hex>` holding a copy
-- of the tenant's tables, recorded here with the tenant, its ledger and central record, each
-- table's row count and checksum, each sequence's value, its size and when it expires. A snapshot
-- schema is no tenant: not in the registry, no Diesel ledger in it, never migrated or listed.
-- `restoring`: a tenant being brought back to a snapshot, not served meanwhile.

ALTER TYPE workspace_status ADD VALUE IF NOT EXISTS 'restoring';

CREATE TABLE workspace_snapshots (
    snapshot_name TEXT PRIMARY KEY CHECK (snapshot_name ~ '^_snap_[a-z0-9_]{1,57}$'),
    schema_name TEXT NOT NULL,
    taken_at TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now(),
    expires_at TIMESTAMPTZ,
    versions TEXT[] NOT NULL,
    ledger JSONB NOT NULL,
    central JSONB NOT NULL,
    tables JSONB NOT NULL,
    sequences JSONB NOT NULL,
    size_bytes BIGINT NOT NULL
);

CREATE INDEX workspace_snapshots_schema_name ON workspace_snapshots (schema_name, taken_at);
