-- 0009: the index behind an agent's most frequent read.
--
-- Every turn the runtime reads a room's latest messages (getMemories):
--   WHERE type = $1 AND "roomId" = $2 AND "agentId" = $3 ORDER BY "createdAt" DESC LIMIT n
-- With only (type, "roomId") the server fetches every row of the room (each carrying its
-- embedding) and sorts them; in a room of a few thousand memories that is ~900 buffers per read.
-- Ordered by this index it reads n rows and stops (35 buffers for n = 32), and the turn's vector
-- search narrows to the room's rows of its agent in one index scan instead of ANDing two bitmaps.
-- The agent's own id is always passed by @elizaos/core, and leads "createdAt" so that rooms
-- shared by several agents are served alike.
--
-- A plain CREATE INDEX: migrations run in one transaction, where CONCURRENTLY is not allowed.
-- On an existing table the build holds writes to memories for its duration (a btree of four
-- narrow columns: about a second per 100k rows).

SET ROLE eliza_owner;

CREATE INDEX IF NOT EXISTS idx_memories_recent
    ON public.memories ("type", "roomId", "agentId", "createdAt" DESC);
