-- 0004: the tables @elizaos/adapter-postgres 0.1.x uses beyond the seed guide: cache and
-- knowledge. Column names and types follow its queries (getCache/setCache/deleteCache,
-- getKnowledge/searchKnowledge/createKnowledge/createKnowledgeChunk/removeKnowledge).

SET ROLE eliza_owner;

-- Key-value cache. "agentId" is text, not uuid: the adapter binds it as a string and any value
-- is allowed. setCache() upserts with ON CONFLICT ("key", "agentId"), so the primary key is
-- required; "value" receives a JSON string.
CREATE TABLE IF NOT EXISTS public.cache (
    "key"       text NOT NULL,
    "agentId"   text NOT NULL,
    "value"     jsonb DEFAULT '{}'::jsonb,
    "createdAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "expiresAt" timestamptz,
    PRIMARY KEY ("key", "agentId")
);

-- RAG knowledge: whole documents ("isMain") and their chunks ("originalId" -> the document).
-- A row is either shared (no agent) or belongs to one agent.
CREATE TABLE IF NOT EXISTS public.knowledge (
    "id"         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "agentId"    uuid REFERENCES public.accounts ("id") ON DELETE CASCADE,
    "content"    jsonb NOT NULL,
    "embedding"  public.vector(:embedding_dims),
    "createdAt"  timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "isMain"     boolean NOT NULL DEFAULT false,
    "originalId" uuid REFERENCES public.knowledge ("id") ON DELETE CASCADE,
    "chunkIndex" integer,
    "isShared"   boolean NOT NULL DEFAULT false,
    CONSTRAINT knowledge_shared_xor_agent CHECK (
        ("isShared" AND "agentId" IS NULL) OR (NOT "isShared" AND "agentId" IS NOT NULL)
    )
);

-- Same reason as memories.embedding (0003).
ALTER TABLE public.knowledge ALTER COLUMN "embedding" SET STORAGE PLAIN;
