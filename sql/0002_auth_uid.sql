-- 0002: auth.uid(), the current end user as row level security sees it.
--
-- Same contract as Supabase's auth.uid(): the trusted middle tier that authenticated the user
-- (PostgREST, an API server) sets the JWT subject in the session, either as
--     SET request.jwt.claim.sub = '<uuid>'            (older PostgREST)
-- or as
--     SET request.jwt.claims = '{"sub": "<uuid>"}'    (PostgREST 9+)
-- and the function returns it, or NULL when neither is set (so per-user policies match nothing).
--
-- Any role may SET these placeholders. They therefore identify a user only when the session is
-- opened by a trusted middle tier and end users cannot send SQL of their own; RLS through
-- eliza_user is not a boundary against a client that holds eliza_user's password.

CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION eliza_owner;

SET ROLE eliza_owner;

CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql
STABLE
AS $$
    SELECT coalesce(
        nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
        nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
    )::uuid
$$;

COMMENT ON FUNCTION auth.uid() IS
    'The end user''s id from request.jwt.claim.sub or request.jwt.claims->>''sub'' (Supabase-compatible); NULL when unset.';

-- Policies call auth.uid() with the privileges of the querying role.
GRANT USAGE ON SCHEMA auth TO eliza_agent, eliza_user, eliza_readonly;
GRANT EXECUTE ON FUNCTION auth.uid() TO eliza_agent, eliza_user, eliza_readonly;
