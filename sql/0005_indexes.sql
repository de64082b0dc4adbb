-- 0005: indexes. Built here, on empty tables, in a few milliseconds; on a populated table an
-- HNSW build takes minutes and needs maintenance_work_mem and /dev/shm (see the trip-wires).

SET ROLE eliza_owner;

-- Vector search. An HNSW index serves only the operator of its operator class:
--   vector_cosine_ops serves <=>  (the seed guide's index, for clients ranking by cosine);
--   vector_l2_ops     serves <->  (what the adapter's searchMemoriesByEmbedding orders by:
--                                  ORDER BY embedding <-> $1::vector LIMIT n).
-- Filtered searches (type, room) rely on hnsw.iterative_scan (0006) to return n rows.
CREATE INDEX IF NOT EXISTS idx_memories_embedding
    ON public.memories USING hnsw ("embedding" public.vector_cosine_ops);
CREATE INDEX IF NOT EXISTS idx_memories_embedding_l2
    ON public.memories USING hnsw ("embedding" public.vector_l2_ops);

-- The seed guide's: getMemories / countMemories / getCachedEmbeddings filter on type and room.
CREATE INDEX IF NOT EXISTS idx_memories_type_room ON public.memories ("type", "roomId");
CREATE INDEX IF NOT EXISTS idx_participants_user ON public.participants ("userId");
CREATE INDEX IF NOT EXISTS idx_participants_room ON public.participants ("roomId");

-- Foreign keys that cascade, and the per-user RLS policies (0008), look rows up by these
-- columns; without an index each would read the whole table.
CREATE INDEX IF NOT EXISTS idx_memories_user ON public.memories ("userId");
CREATE INDEX IF NOT EXISTS idx_memories_agent ON public.memories ("agentId");
CREATE INDEX IF NOT EXISTS idx_memories_room ON public.memories ("roomId");
CREATE INDEX IF NOT EXISTS idx_goals_room ON public.goals ("roomId");
CREATE INDEX IF NOT EXISTS idx_goals_user ON public.goals ("userId");
CREATE INDEX IF NOT EXISTS idx_logs_room ON public.logs ("roomId");
CREATE INDEX IF NOT EXISTS idx_logs_user ON public.logs ("userId");

-- getRelationship(s): ("userA" = $1 AND "userB" = $2) OR ... / "userA" = $1 OR "userB" = $1.
CREATE INDEX IF NOT EXISTS idx_relationships_users ON public.relationships ("userA", "userB");
CREATE INDEX IF NOT EXISTS idx_relationships_user_b ON public.relationships ("userB");
CREATE INDEX IF NOT EXISTS idx_relationships_user ON public.relationships ("userId");

-- getKnowledge / clearKnowledge / removeKnowledge filter on these. No vector index on knowledge:
-- searchKnowledge ranks by a combined vector+keyword score that no index can serve.
CREATE INDEX IF NOT EXISTS idx_knowledge_agent ON public.knowledge ("agentId");
CREATE INDEX IF NOT EXISTS idx_knowledge_agent_main ON public.knowledge ("agentId", "isMain");
CREATE INDEX IF NOT EXISTS idx_knowledge_original ON public.knowledge ("originalId");
CREATE INDEX IF NOT EXISTS idx_knowledge_created ON public.knowledge ("agentId", "createdAt");
CREATE INDEX IF NOT EXISTS idx_knowledge_shared ON public.knowledge ("isShared");
