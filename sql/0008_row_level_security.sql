-- 0008: row level security on every table that carries a user.
--
-- ENABLE applies the policies to everyone but the owner and BYPASSRLS roles; FORCE applies them
-- to the owner, eliza_owner, too. Only the owner (or a superuser) can turn RLS off again, and
-- eliza_user owns nothing. Policies are per role:
--
--   eliza_agent     USING (true). The agent runtime serves many users from one pool of
--                   connections and never sets a JWT subject: restricted by the per-user policy
--                   it would see nothing. A permissive policy rather than BYPASSRLS keeps the
--                   agent inside RLS, so a later restrictive policy (e.g. per agent) would apply
--                   to it, and BYPASSRLS stays a privilege no application role holds.
--   eliza_readonly  SELECT, USING (true): replicas and reporting see everything, change nothing.
--   eliza_user      the seed guide's isolation policy, adapted to each table's user columns;
--                   USING doubles as WITH CHECK, so a user cannot write rows that are not theirs.
--   anyone else     no policy, so no rows (eliza_owner included). Data migrations must run as
--                   the superuser, which bypasses RLS.
--
-- cache and knowledge carry agents, not users; eliza_user has no grant on them (0007).
-- Foreign key checks and ON DELETE CASCADE bypass RLS by design.

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['accounts', 'rooms', 'memories', 'goals', 'participants',
                             'relationships', 'logs']
    LOOP
        EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', t);

        EXECUTE format('DROP POLICY IF EXISTS %I ON public.%I', t || '_agent_all', t);
        EXECUTE format('CREATE POLICY %I ON public.%I FOR ALL TO eliza_agent USING (true) WITH CHECK (true)',
                       t || '_agent_all', t);

        EXECUTE format('DROP POLICY IF EXISTS %I ON public.%I', t || '_readonly_select', t);
        EXECUTE format('CREATE POLICY %I ON public.%I FOR SELECT TO eliza_readonly USING (true)',
                       t || '_readonly_select', t);
    END LOOP;
END
$$;

-- The end-user policies, one per table, written out.

DROP POLICY IF EXISTS memories_isolation ON public.memories;
CREATE POLICY memories_isolation ON public.memories
    FOR ALL TO eliza_user
    USING (auth.uid() = "userId" OR auth.uid() = "agentId");

DROP POLICY IF EXISTS accounts_isolation ON public.accounts;
CREATE POLICY accounts_isolation ON public.accounts
    FOR ALL TO eliza_user
    USING (auth.uid() = "id");

DROP POLICY IF EXISTS participants_isolation ON public.participants;
CREATE POLICY participants_isolation ON public.participants
    FOR ALL TO eliza_user
    USING (auth.uid() = "userId");

DROP POLICY IF EXISTS goals_isolation ON public.goals;
CREATE POLICY goals_isolation ON public.goals
    FOR ALL TO eliza_user
    USING (auth.uid() = "userId");

DROP POLICY IF EXISTS relationships_isolation ON public.relationships;
CREATE POLICY relationships_isolation ON public.relationships
    FOR ALL TO eliza_user
    USING (auth.uid() = "userA" OR auth.uid() = "userB" OR auth.uid() = "userId");

DROP POLICY IF EXISTS logs_isolation ON public.logs;
CREATE POLICY logs_isolation ON public.logs
    FOR ALL TO eliza_user
    USING (auth.uid() = "userId");

-- Rooms carry no user: a user sees the rooms they take part in. The subquery on participants is
-- itself filtered by participants_isolation, which is what makes it "their" memberships.
DROP POLICY IF EXISTS rooms_isolation ON public.rooms;
CREATE POLICY rooms_isolation ON public.rooms
    FOR ALL TO eliza_user
    USING (EXISTS (
        SELECT 1 FROM public.participants AS p
        WHERE p."roomId" = rooms."id" AND p."userId" = auth.uid()
    ));
