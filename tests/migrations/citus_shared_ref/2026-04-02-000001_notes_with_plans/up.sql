-- A tenant table referencing a shared table (public.plans, from the shared migrations).
CREATE TABLE subscriptions (
    id SERIAL PRIMARY KEY,
    plan_id INTEGER NOT NULL REFERENCES public.plans (id)
);
