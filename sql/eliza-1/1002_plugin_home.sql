-- eliza-1 1002: the plugin's migration ledger and the grants that follow its tables.
-- Runs as the superuser; objects are created as eliza_owner, the migration role, so that the
-- plugin (connected as eliza_owner) owns and may alter them.
--
-- The plugin's migrator creates schema "migrations" and its three ledger tables with
-- CREATE ... IF NOT EXISTS *before* it takes its advisory lock, so two agents starting at once
-- race on them ("duplicate key value violates unique constraint pg_namespace_nspname_index").
-- Creating them here, with the plugin's own definitions (@elizaos/plugin-sql 1.7.2,
-- MigrationTracker.ensureTables), turns those statements into no-ops.

SET ROLE eliza_owner;

CREATE SCHEMA IF NOT EXISTS migrations;
CREATE TABLE IF NOT EXISTS migrations._migrations (
    id SERIAL PRIMARY KEY,
    plugin_name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS migrations._journal (
    plugin_name TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    dialect TEXT NOT NULL DEFAULT 'postgresql',
    entries JSONB NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS migrations._snapshots (
    id SERIAL PRIMARY KEY,
    plugin_name TEXT NOT NULL,
    idx INTEGER NOT NULL,
    snapshot JSONB NOT NULL,
    created_at TIMESTAMP DEFAULT NOW(),
    UNIQUE(plugin_name, idx)
);

-- The ledger is the migrator's alone: agents neither read nor change it.
REVOKE ALL ON SCHEMA migrations FROM PUBLIC;

-- Tables, sequences and functions the migrator creates later in public (every table of the
-- plugin, its RLS helpers) are usable by the agents — DML only, no DDL — and readable by the
-- read-only role.
ALTER DEFAULT PRIVILEGES FOR ROLE eliza_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO eliza_agent;
ALTER DEFAULT PRIVILEGES FOR ROLE eliza_owner IN SCHEMA public
    GRANT SELECT ON TABLES TO eliza_readonly;
ALTER DEFAULT PRIVILEGES FOR ROLE eliza_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO eliza_agent;
ALTER DEFAULT PRIVILEGES FOR ROLE eliza_owner IN SCHEMA public
    GRANT SELECT ON SEQUENCES TO eliza_readonly;

RESET ROLE;
