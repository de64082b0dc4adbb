-- Moving a stack from the eliza-0.1 profile to eliza-1, step 1 of 2: set the 0.1 schema aside.
-- Run as the superuser by `elizadb move-to-eliza1 set-aside`, in one transaction.
--
-- The 0.1 tables have the names @elizaos/plugin-sql 1.x wants for its own (rooms, memories,
-- participants, relationships, logs, cache), and the plugin's migrator would try to rename
-- their camelCase columns in place. So they move, data, indexes, triggers and policies with
-- them, into schema eliza01, which only their owner and the superuser reach; public is left empty
-- for the plugin. Their rows are copied over by step 2 once the plugin has created its tables.

DO $$
BEGIN
    IF to_regclass('public.memories') IS NULL OR to_regclass('public.accounts') IS NULL THEN
        RAISE EXCEPTION 'elizadb: public holds no 0.1 schema (accounts, memories) to set aside';
    END IF;
    IF to_regnamespace('eliza01') IS NOT NULL THEN
        RAISE EXCEPTION 'elizadb: schema eliza01 exists already: the 0.1 schema was set aside before';
    END IF;
END
$$;

CREATE SCHEMA eliza01 AUTHORIZATION eliza_owner;  -- the owner of the tables it receives
REVOKE ALL ON SCHEMA eliza01 FROM PUBLIC;

ALTER TABLE public.accounts SET SCHEMA eliza01;
ALTER TABLE public.rooms SET SCHEMA eliza01;
ALTER TABLE public.memories SET SCHEMA eliza01;
ALTER TABLE public.goals SET SCHEMA eliza01;
ALTER TABLE public.participants SET SCHEMA eliza01;
ALTER TABLE public.relationships SET SCHEMA eliza01;
ALTER TABLE public.logs SET SCHEMA eliza01;
ALTER TABLE public.cache SET SCHEMA eliza01;
ALTER TABLE public.knowledge SET SCHEMA eliza01;
ALTER FUNCTION public.memories_sync_unique_flags() SET SCHEMA eliza01;

-- The 0.1 migrations' ledger rows go with them: the stack's ledger then records only what the
-- eliza-1 profile applies (sql/eliza-1/, versions 1001 and up).
CREATE TABLE eliza01.schema_migrations AS
    SELECT * FROM elizadb.schema_migrations WHERE version < '1000';
DELETE FROM elizadb.schema_migrations WHERE version < '1000';
