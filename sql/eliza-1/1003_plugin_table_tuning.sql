-- eliza-1 1003: tune the plugin's tables as its migrations create them.
-- Runs as the superuser: only a superuser may create an event trigger.
--
-- @elizaos/plugin-sql ranks memories by 1 - (dim_N <=> query), an expression no HNSW index can
-- serve, so every search reads the embeddings of the agent's memories in full. Under a vector
-- column's default storage a 1536-dimension value (6 KB) is moved out of line to TOAST, and the
-- scan pays an extra lookup per row; stored PLAIN it stays in the heap page (measured here:
-- half the size, 2.6x the scan speed). Storage must be set before rows are written, and the
-- tables are the plugin's, created at an agent's start: so an event trigger sets it when they
-- appear. Columns wider than 2000 dimensions (dim_3072, 12 KB) cannot be stored in a page and
-- keep their default. The same trigger adds the index the search's filter (agent_id, type)
-- wants on memories.
--
-- The trigger runs as whoever ran the DDL — the migration role, which owns the tables it
-- creates — and touches only tables of schema public.

CREATE OR REPLACE FUNCTION elizadb.tune_plugin_tables() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    cmd record;
    col record;
BEGIN
    FOR cmd IN SELECT DISTINCT objid FROM pg_event_trigger_ddl_commands()
               WHERE object_type = 'table' AND schema_name = 'public' LOOP
        FOR col IN SELECT a.attname FROM pg_attribute a
                   WHERE a.attrelid = cmd.objid AND a.attnum > 0 AND NOT a.attisdropped
                     AND a.atttypid = 'public.vector'::regtype
                     AND a.atttypmod BETWEEN 1 AND 2000 AND a.attstorage <> 'p' LOOP
            -- Fires this trigger again; the column is PLAIN by then, so it stops there.
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET STORAGE PLAIN',
                           cmd.objid::regclass, col.attname);
        END LOOP;
        IF cmd.objid = to_regclass('public.memories')
           AND (SELECT count(*) FROM pg_attribute
                 WHERE attrelid = cmd.objid AND attname IN ('agent_id', 'type')
                   AND NOT attisdropped) = 2 THEN
            EXECUTE 'CREATE INDEX IF NOT EXISTS elizadb_memories_agent_type'
                    ' ON public.memories (agent_id, type)';
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION elizadb.tune_plugin_tables() FROM PUBLIC;

DROP EVENT TRIGGER IF EXISTS elizadb_tune_plugin_tables;
CREATE EVENT TRIGGER elizadb_tune_plugin_tables ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
    EXECUTE FUNCTION elizadb.tune_plugin_tables();
