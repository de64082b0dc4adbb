-- Moving a stack from the eliza-0.1 profile to eliza-1, step 2 of 2: carry the rows over into
-- the tables @elizaos/plugin-sql 1.x created. Run as the superuser (row level security does not
-- apply) by `elizadb move-to-eliza1 carry-over`, in one transaction; the embeddings follow in
-- the same transaction (elizadb/ops/eliza1_move.py), into the plugin's column for the stack's
-- embedding dimension (dim_384 ... dim_3072).
--
--   0.1                         1.x
--   accounts of agents       -> agents (name, username) and their own entity
--   other accounts           -> entities of the agent they talked to most (names, metadata)
--   rooms                    -> rooms (source 'eliza-0.1', type GROUP, the agent of their memories)
--   participants             -> participants (userState -> room_state)
--   memories                 -> memories (userId -> entity_id) + embeddings (embedding -> dim_N)
--   relationships            -> relationships (userA/userB -> source/target, status -> tags)
--   logs, cache              -> logs, cache
--   knowledge of an agent    -> memories as @elizaos/plugin-knowledge 1.x writes them: documents
--                               ("originalId" null) type 'documents', their chunks type
--                               'knowledge' (metadata type 'fragment', documentId, position),
--                               in the agent's own room and world, + embeddings
--   goals                    -> not carried: 1.x has no goals; they stay in eliza01
--   shared knowledge         -> not carried: every 1.x memory belongs to an agent; stays too
--
-- An agent is an account that some memory, or a cache or knowledge row, names as its agentId.

CREATE TEMP TABLE move_agents ON COMMIT DROP AS
SELECT DISTINCT a.id, coalesce(a.name, a.username, 'agent') AS name, a.username
  FROM eliza01.accounts a
 WHERE a.id IN (SELECT "agentId" FROM eliza01.memories
                UNION SELECT "agentId" FROM eliza01.knowledge
                UNION SELECT "agentId"::uuid FROM eliza01.cache
                       WHERE "agentId" ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$');

INSERT INTO public.agents (id, name, username)
SELECT id, name, username FROM move_agents;

-- Each account's agent: itself for an agent, else the agent of most of its memories, else of
-- most of its rooms' memories, else the first agent.
CREATE TEMP TABLE move_entity_agent ON COMMIT DROP AS
SELECT a.id,
       coalesce(
           (SELECT id FROM move_agents g WHERE g.id = a.id),
           (SELECT m."agentId" FROM eliza01.memories m WHERE m."userId" = a.id
             GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1),
           (SELECT m."agentId" FROM eliza01.participants p
              JOIN eliza01.memories m ON m."roomId" = p."roomId"
             WHERE p."userId" = a.id GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1),
           (SELECT min(id::text)::uuid FROM move_agents)
       ) AS agent_id
  FROM eliza01.accounts a;

INSERT INTO public.entities (id, agent_id, created_at, names, metadata)
SELECT a.id, e.agent_id, a."createdAt",
       array_remove(ARRAY[a.name, a.username], NULL),
       coalesce(a.details, '{}'::jsonb)
           || jsonb_strip_nulls(jsonb_build_object('email', a.email, 'avatarUrl', a."avatarUrl"))
  FROM eliza01.accounts a JOIN move_entity_agent e USING (id)
 WHERE e.agent_id IS NOT NULL;

CREATE TEMP TABLE move_room_agent ON COMMIT DROP AS
SELECT r.id,
       (SELECT m."agentId" FROM eliza01.memories m WHERE m."roomId" = r.id
         GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1) AS agent_id
  FROM eliza01.rooms r;

INSERT INTO public.rooms (id, agent_id, source, type, created_at)
SELECT r.id, ra.agent_id, 'eliza-0.1', 'GROUP', r."createdAt"
  FROM eliza01.rooms r JOIN move_room_agent ra USING (id);

INSERT INTO public.participants (id, created_at, entity_id, room_id, agent_id, room_state)
SELECT p.id, p."createdAt", p."userId", p."roomId", ra.agent_id, p."userState"
  FROM eliza01.participants p JOIN move_room_agent ra ON ra.id = p."roomId";

INSERT INTO public.memories (id, type, created_at, content, entity_id, agent_id, room_id,
                             "unique", metadata)
SELECT m.id, m.type, m."createdAt", m.content, m."userId", m."agentId", m."roomId", m."unique",
       '{}'::jsonb
  FROM eliza01.memories m
 WHERE m."agentId" IS NOT NULL;


INSERT INTO public.relationships (id, created_at, source_entity_id, target_entity_id, agent_id,
                                  tags, metadata)
SELECT r.id, r."createdAt", r."userA", r."userB",
       coalesce((SELECT id FROM move_agents g WHERE g.id = r."userId"),
                (SELECT agent_id FROM move_entity_agent e WHERE e.id = r."userA")),
       CASE WHEN r.status IS NULL THEN '{}'::text[] ELSE ARRAY[r.status] END,
       '{}'::jsonb
  FROM eliza01.relationships r;

INSERT INTO public.logs (id, created_at, entity_id, body, type, room_id)
SELECT l.id, l."createdAt", l."userId", l.body, l.type, l."roomId" FROM eliza01.logs l;

INSERT INTO public.cache (key, agent_id, value, created_at, expires_at)
SELECT c.key, c."agentId"::uuid, coalesce(c.value, '{}'::jsonb), c."createdAt", c."expiresAt"
  FROM eliza01.cache c
 WHERE c."agentId" ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
   AND c."agentId"::uuid IN (SELECT id FROM move_agents);

-- Knowledge. 1.x keeps it in memories, scoped to the agent's own room, world and entity (all
-- three are the agent's id), which the agent's first start would create: made here when
-- missing, as AgentRuntime.initialize makes them, so that the documents are where the
-- knowledge plugin lists them.
CREATE TEMP TABLE move_knowledge_agents ON COMMIT DROP AS
SELECT g.id, g.name FROM move_agents g
 WHERE g.id IN (SELECT "agentId" FROM eliza01.knowledge);

INSERT INTO public.worlds (id, agent_id, name, message_server_id)
SELECT id, id, name || '''s World', id FROM move_knowledge_agents
ON CONFLICT (id) DO NOTHING;

INSERT INTO public.rooms (id, agent_id, source, type, message_server_id, world_id, name,
                          channel_id)
SELECT id, id, 'elizaos', 'SELF', id, id, name, id::text FROM move_knowledge_agents
ON CONFLICT (id) DO NOTHING;

INSERT INTO public.memories (id, type, created_at, content, entity_id, agent_id, room_id,
                             world_id, "unique", metadata)
SELECT k.id,
       CASE WHEN k."originalId" IS NULL THEN 'documents' ELSE 'knowledge' END,
       k."createdAt", k.content, k."agentId", k."agentId", k."agentId", k."agentId", true,
       CASE WHEN k."originalId" IS NULL THEN
           jsonb_build_object('type', 'document', 'documentId', k.id,
                              'timestamp', (extract(epoch FROM k."createdAt") * 1000)::bigint,
                              'source', 'eliza-0.1')
       ELSE
           jsonb_build_object('type', 'fragment', 'documentId', k."originalId",
                              'position', coalesce(k."chunkIndex", 0),
                              'timestamp', (extract(epoch FROM k."createdAt") * 1000)::bigint,
                              'source', 'eliza-0.1')
       END
  FROM eliza01.knowledge k
 WHERE k."agentId" IS NOT NULL;
