-- The tenant registry, in the shared schema (the migrator runs this with the shared schema alone
-- on the search_path, so unqualified names land there).

CREATE TYPE workspace_status AS ENUM ('provisioning', 'active', 'suspended', 'archived');

CREATE TABLE workspaces (
    id BIGSERIAL PRIMARY KEY,
    schema_name TEXT NOT NULL UNIQUE
        CHECK (schema_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    display_name TEXT NOT NULL DEFAULT '',
    status workspace_status NOT NULL DEFAULT 'active',
    created_at TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now()
);

CREATE FUNCTION workspace_touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog
AS $$
BEGIN
    NEW.updated_at := pg_catalog.now();
    RETURN NEW;
END
$$;

CREATE TRIGGER workspaces_touch_updated_at
    BEFORE UPDATE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION workspace_touch_updated_at();

-- The central record of tenant migrations: one row per (tenant, applied version), written in the
-- same transaction as the tenant's own ledger row, so fleet status is one query. No foreign key:
-- an application may keep its own registry table; dropping and renaming a tenant update it.
CREATE TABLE workspace_migrations (
    schema_name TEXT NOT NULL,
    version VARCHAR(50) NOT NULL,
    run_on TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (schema_name, version)
);

-- The warm pool: spare tenant schemas (named `_spare_<hex>`) with every tenant migration applied,
-- claimed by `create_tenant` (renamed, registered and their central record moved in one
-- transaction). Spares are not tenants: not in the registry, not listed, not migrated by
-- `migrate_all`; `fill_spares` brings stale spares up to date.
CREATE TABLE workspace_spares (
    schema_name TEXT PRIMARY KEY CHECK (schema_name ~ '^_spare_[a-z0-9_]{1,56}$'),
    created_at TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now()
);
