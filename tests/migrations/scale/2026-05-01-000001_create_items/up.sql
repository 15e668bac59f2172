-- One small table per tenant: the fleet-size tests create thousands of tenants.
CREATE TABLE items (
    id SERIAL PRIMARY KEY,
    title TEXT NOT NULL DEFAULT ''
);
