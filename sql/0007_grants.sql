-- 0007: who may do what. Runs as the superuser, which grants on eliza_owner's behalf.
--
--   eliza_agent     the ElizaOS agent runtime: DML on every Eliza table, no DDL anywhere.
--   eliza_user      an end user: its own rows only (row level security, 0008).
--   eliza_readonly  replicas and reporting: SELECT only.
-- Nobody but eliza_owner gets TRUNCATE, REFERENCES or TRIGGER; TRUNCATE would also bypass RLS.

GRANT SELECT, INSERT, UPDATE, DELETE ON
    public.accounts, public.rooms, public.memories, public.goals, public.participants,
    public.relationships, public.logs, public.cache, public.knowledge
TO eliza_agent;

GRANT SELECT ON
    public.accounts, public.rooms, public.memories, public.goals, public.participants,
    public.relationships, public.logs, public.cache, public.knowledge
TO eliza_readonly;

-- End users: their memories, goals, room memberships and relationships, read and write; their
-- own account row, read and update (deleting it would cascade through everything it touches);
-- the rooms they are in and their logs, read only (the agent writes the audit log, and users
-- must not rewrite it). Nothing on cache or knowledge, which belong to agents.
GRANT SELECT, INSERT, UPDATE, DELETE ON
    public.memories, public.goals, public.participants, public.relationships
TO eliza_user;
GRANT SELECT, UPDATE ON public.accounts TO eliza_user;
GRANT SELECT ON public.rooms, public.logs TO eliza_user;

-- No DDL for the runtime roles: no CREATE on public (0001), none on auth or elizadb (never
-- granted), none on the database (not granted to PUBLIC by default), and no temporary tables.
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$$;

-- Tables and sequences eliza_owner creates later in public get the same grants. eliza_user is
-- deliberately left out: a new table has no RLS policy until a migration writes one, and a
-- default grant would expose all of its rows to every end user.
ALTER DEFAULT PRIVILEGES FOR ROLE eliza_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO eliza_agent;
ALTER DEFAULT PRIVILEGES FOR ROLE eliza_owner IN SCHEMA public
    GRANT SELECT ON TABLES TO eliza_readonly;
ALTER DEFAULT PRIVILEGES FOR ROLE eliza_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO eliza_agent;
ALTER DEFAULT PRIVILEGES FOR ROLE eliza_owner IN SCHEMA public
    GRANT SELECT ON SEQUENCES TO eliza_readonly;
