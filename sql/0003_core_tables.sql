-- 0003: the core Eliza tables of the seed guide, in the shape @elizaos/adapter-postgres 0.1.x
-- queries them.
--
-- Where the seed guide and the adapter differ, both are served:
--   * every foreign key is ON DELETE CASCADE, as in the adapter's schema: its removeRoom()
--     deletes memories, participants and goals and then the room, and expects the rest (logs)
--     to follow;
--   * memories has the adapter's "unique" and the seed's "isUnique", kept equal by a trigger;
--   * participants has the seed's "joinedAt" and the adapter's "createdAt", "userState",
--     "last_message_read" and UNIQUE ("userId", "roomId");
--   * accounts.username and accounts.email are NOT unique, unlike the seed: the agent runtime
--     (@elizaos/core 0.1.9 ensureUserExists) names every user without a user name after the
--     character ("Unknown" at worst) and gives them the character's email when it has one, and
--     the adapter swallows the failed INSERT, after which every memory of that user fails its
--     foreign key.
--
-- Tables are owned by eliza_owner; the vector size is the runner's :embedding_dims.

SET ROLE eliza_owner;

CREATE TABLE IF NOT EXISTS public.accounts (
    "id"        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "createdAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "name"      text,
    "username"  text,
    "email"     text NOT NULL,
    "avatarUrl" text,
    "details"   jsonb DEFAULT '{}'::jsonb
);

CREATE TABLE IF NOT EXISTS public.rooms (
    "id"        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "createdAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS public.memories (
    "id"        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The adapter stores its "tableName" here: messages, facts, documents, fragments, ...
    "type"      text NOT NULL,
    "createdAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "content"   jsonb NOT NULL,
    "embedding" public.vector(:embedding_dims),
    "userId"    uuid REFERENCES public.accounts ("id") ON DELETE CASCADE,
    "agentId"   uuid REFERENCES public.accounts ("id") ON DELETE CASCADE,
    "roomId"    uuid REFERENCES public.rooms ("id") ON DELETE CASCADE,
    -- The adapter writes and filters "unique"; the seed guide names it "isUnique".
    "unique"    boolean NOT NULL DEFAULT true,
    "isUnique"  boolean NOT NULL DEFAULT true
);

-- Keep the vector inline and uncompressed: a vector(1536) is about 6 KB, which TOAST would
-- otherwise move out of line, and an exact scan then reads the TOAST table too (measured 2.6x
-- slower, twice the disk). Set before any row is written; it applies to rows written after it.
ALTER TABLE public.memories ALTER COLUMN "embedding" SET STORAGE PLAIN;

-- "unique" and "isUnique" are two names for one flag. Both are real, writable columns with the
-- seed's DEFAULT true, so a client may write either; this trigger makes them equal.
--   INSERT: both default to true, so a false in either can only have been written on purpose:
--           the row gets "unique" AND "isUnique".
--   UPDATE: the column whose value changed wins. (The two are always equal before an UPDATE,
--           so if both changed, they changed to the same value.)
-- (A generated column would be simpler but could not be written, nor carry the seed's default.)
CREATE OR REPLACE FUNCTION public.memories_sync_unique_flags() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW."unique" := NEW."unique" AND NEW."isUnique";
        NEW."isUnique" := NEW."unique";
    ELSIF NEW."unique" IS DISTINCT FROM OLD."unique" THEN
        NEW."isUnique" := NEW."unique";
    ELSE
        NEW."unique" := NEW."isUnique";
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER memories_sync_unique_flags
    BEFORE INSERT OR UPDATE OF "unique", "isUnique" ON public.memories
    FOR EACH ROW EXECUTE FUNCTION public.memories_sync_unique_flags();

CREATE TABLE IF NOT EXISTS public.goals (
    "id"          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "createdAt"   timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "userId"      uuid REFERENCES public.accounts ("id") ON DELETE CASCADE,
    "name"        text,
    -- The adapter writes GoalStatus values: 'IN_PROGRESS', 'DONE', 'FAILED'.
    "status"      text,
    "description" text,
    "roomId"      uuid REFERENCES public.rooms ("id") ON DELETE CASCADE,
    "objectives"  jsonb NOT NULL DEFAULT '[]'::jsonb
);

CREATE TABLE IF NOT EXISTS public.participants (
    "id"                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "createdAt"         timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "joinedAt"          timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "userId"            uuid REFERENCES public.accounts ("id") ON DELETE CASCADE,
    "roomId"            uuid REFERENCES public.rooms ("id") ON DELETE CASCADE,
    -- 'FOLLOWED', 'MUTED' or NULL, set by the adapter's setParticipantUserState().
    "userState"         text,
    "last_message_read" text,
    UNIQUE ("userId", "roomId")
);

CREATE TABLE IF NOT EXISTS public.relationships (
    "id"        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "createdAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "userA"     uuid NOT NULL REFERENCES public.accounts ("id") ON DELETE CASCADE,
    "userB"     uuid NOT NULL REFERENCES public.accounts ("id") ON DELETE CASCADE,
    "status"    text,
    -- The adapter sets this to "userA", the side that created the relationship.
    "userId"    uuid NOT NULL REFERENCES public.accounts ("id") ON DELETE CASCADE
);

-- The seed guide's audit log; the adapter's log() writes it. CASCADE, as the adapter's own
-- schema has it, because removeRoom() deletes the room without deleting its logs first.
CREATE TABLE IF NOT EXISTS public.logs (
    "id"        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "createdAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "userId"    uuid NOT NULL REFERENCES public.accounts ("id") ON DELETE CASCADE,
    "body"      jsonb NOT NULL,
    "type"      text NOT NULL,
    "roomId"    uuid NOT NULL REFERENCES public.rooms ("id") ON DELETE CASCADE
);
