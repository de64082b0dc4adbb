-- 0001: check the roles, create the extensions, lock down schema public.
-- Runs as the superuser (the runner's role): only a superuser may create these extensions.

-- The roles are created, with passwords, by the bootstrap before any migration runs. Fail with a
-- clear message rather than on the first GRANT, and refuse roles that would make row level
-- security meaningless: the RLS design (0008) depends on none of them bypassing it.
DO $$
DECLARE
    missing text;
    too_strong text;
BEGIN
    SELECT string_agg(r, ', ') INTO missing
    FROM unnest(ARRAY['eliza_owner', 'eliza_agent', 'eliza_user', 'eliza_readonly']) AS r
    WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'elizadb: the roles % must exist before the migrations run', missing
            USING HINT = 'The bootstrap creates the roles; run it first.';
    END IF;

    SELECT string_agg(rolname, ', ') INTO too_strong
    FROM pg_roles
    WHERE rolname IN ('eliza_agent', 'eliza_user', 'eliza_readonly')
      AND (rolsuper OR rolbypassrls);
    IF too_strong IS NOT NULL THEN
        RAISE EXCEPTION 'elizadb: the roles % must be neither SUPERUSER nor BYPASSRLS', too_strong
            USING HINT = 'Row level security on the Eliza tables is enforced through these roles.';
    END IF;
END
$$;

-- vector: the embedding column and its HNSW indexes.
-- fuzzystrmatch: levenshtein(), which @elizaos/adapter-postgres calls in getCachedEmbeddings.
-- pgcrypto: asked for by the seed guide (gen_random_uuid() itself is built in since PG 13).
-- In schema public, where the adapter's unqualified names (vector, levenshtein) find them.
CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch WITH SCHEMA public;
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;

-- Nobody creates objects in public except the owner of the Eliza schema. (PostgreSQL 15+
-- already omits this grant in a new database; a database restored or upgraded from an older
-- server may still have it.)
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
-- The database may be owned by postgres rather than eliza_owner, so grant explicitly.
GRANT USAGE, CREATE ON SCHEMA public TO eliza_owner;
GRANT USAGE ON SCHEMA public TO eliza_agent, eliza_user, eliza_readonly;
