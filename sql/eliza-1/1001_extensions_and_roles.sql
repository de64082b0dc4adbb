-- eliza-1 1001: what @elizaos/plugin-sql 1.x needs before its own migrations can run.
-- Runs as the superuser (the runner's role): only a superuser may create these extensions.
--
-- The plugin writes the application tables itself (Drizzle "runtime migrations" at every agent
-- start) and asks for these extensions with CREATE EXTENSION IF NOT EXISTS, which a role that
-- is not a superuser may only run when the extension is already there.

DO $$
DECLARE
    missing text;
    too_strong text;
BEGIN
    SELECT string_agg(r, ', ') INTO missing
    FROM unnest(ARRAY['eliza_owner', 'eliza_agent', 'eliza_readonly']) AS r
    WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'elizadb: the roles % must exist before the migrations run', missing
            USING HINT = 'The bootstrap creates the roles; run it first.';
    END IF;

    -- The plugin's data isolation is row level security with FORCE: a role that bypasses it
    -- (the migrator included) would see every server's rows.
    SELECT string_agg(rolname, ', ') INTO too_strong
    FROM pg_roles
    WHERE rolname IN ('eliza_owner', 'eliza_agent', 'eliza_readonly')
      AND (rolsuper OR rolbypassrls);
    IF too_strong IS NOT NULL THEN
        RAISE EXCEPTION 'elizadb: the roles % must be neither SUPERUSER nor BYPASSRLS', too_strong
            USING HINT = 'Row level security on the plugin''s tables is enforced through these roles.';
    END IF;
END
$$;

-- vector: the embeddings table's dim384 … dim3072 columns. fuzzystrmatch: levenshtein() in the
-- plugin's cached-embedding lookup. pgcrypto: the plugin asks for it on a real PostgreSQL.
-- In public, where the plugin's unqualified names find them.
CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch WITH SCHEMA public;
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;

-- Only the migrator creates objects in public; the agents use what it creates.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO eliza_owner;
GRANT USAGE ON SCHEMA public TO eliza_agent, eliza_readonly;

-- No temporary tables for anyone who is not granted them.
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$$;
