// Drives the unmodified @elizaos/plugin-sql (1.7.2, with @elizaos/core 1.7.2) against a deployed
// eliza-db stack the way ElizaOS 1.x uses it, and prints one JSON line per operation:
// {"op", "ok", "detail"}. Exit status 0 only if every operation succeeded.
//
//   POSTGRES_URL=... node drive.mjs migrate   the plugin's runtime migrations, as an ElizaOS
//                                             server runs them at start-up (migration role,
//                                             session-mode pool)
//   POSTGRES_URL=... node drive.mjs agent     an agent's memory life (application role,
//                                             transaction-mode pool)
//   POSTGRES_URL=... node drive.mjs runtime   @elizaos/core's AgentRuntime.initialize() with
//                                             the plugin: an agent's own start
//   POSTGRES_URL=... node drive.mjs server    the database steps of an ElizaOS server's start
//                                             (@elizaos/server 1.7.2 AgentServer.initialize)
//   POSTGRES_URL=... node drive.mjs foreign   with ELIZADB_FOREIGN (another agent's summary):
//                                             reads and a delete aimed at that agent's rows
//   POSTGRES_URL=... node drive.mjs recall    with ELIZADB_RECALL: an agent's knowledge read as
//                                             @elizaos/plugin-knowledge 1.x reads it
//
// The connection string is used as given: node-postgres parses it, sslmode=verify-full and the
// absolute sslrootcert included, so this proves the stack's `connections.node` URLs work from
// any working directory.
//
// Environment: ELIZADB_AGENT_NAME names the agent (its id is derived from it, as ElizaOS does
// from a character name); ENABLE_DATA_ISOLATION / ELIZA_SERVER_ID are read by the plugin itself.
import { createHash } from "node:crypto";
import pg from "pg";
import { AgentRuntime, ElizaOS, stringToUuid } from "@elizaos/core";
import sqlPlugin, {
  DatabaseMigrationService,
  createDatabaseAdapter,
  getOrCreateRlsServer,
  installRLSFunctions,
  setServerContext,
  uninstallRLS,
} from "@elizaos/plugin-sql";

const DIMS = 1536;
const mode = process.argv[2];
const url = process.env.POSTGRES_URL;
const MODES = ["migrate", "agent", "runtime", "server", "foreign", "recall"];
if (!url || !MODES.includes(mode)) {
  console.error(`usage: POSTGRES_URL=... node drive.mjs ${MODES.join("|")}`);
  process.exit(2);
}

// A run that hangs is a failure, not a stuck CI job.
const watchdogMs = Number(process.env.ELIZADB_DRIVE_TIMEOUT_MS ?? 120000);
setTimeout(() => {
  report("watchdog", false, `no result after ${watchdogMs} ms`);
  process.exit(3);
}, watchdogMs).unref();

let failures = 0;
function report(op, ok, detail) {
  if (!ok) failures++;
  console.log(JSON.stringify({ op, ok, detail }));
}
// Runs one operation; `check` turns its result into [ok, detail]. An exception is a failure.
async function step(op, run, check = (r) => [true, r]) {
  const started = performance.now();
  try {
    const result = await run();
    const [ok, detail] = check(result);
    report(op, Boolean(ok), { ms: Math.round(performance.now() - started), result: detail });
    return result;
  } catch (err) {
    // drizzle wraps the server's error: its message is the cause's.
    const cause = err?.cause ? ` (${err.cause.code ?? ""} ${err.cause.message})` : "";
    report(op, false, `${err?.code ?? ""} ${err?.message ?? err}${cause}`.trim());
    return undefined;
  }
}

const agentName = process.env.ELIZADB_AGENT_NAME ?? "elizadb-plugin-drive";
// With ENABLE_DATA_ISOLATION=true the plugin's own RLS on memories is STRICT: a row is visible
// only inside an entity context (app.entity_id set to a participant of the memory's room). The
// plugin sets that context in its withIsolationContext transaction, which getMemories,
// createMemory, log and getLogs use; searchMemories, countMemories, getMemoryById and
// deleteMemory run on the pool without it, so under isolation they find no memory and the
// delete removes none, whatever the caller does. Those operations are checked for exactly that
// behaviour here, so that a plugin that changes it fails the test.
const isolated = process.env.ENABLE_DATA_ISOLATION === "true";
const agentId = process.env.ELIZADB_AGENT_ID ?? stringToUuid(agentName);
const adapter = createDatabaseAdapter({ postgresUrl: url }, agentId);

if (mode === "migrate") {
  // What an ElizaOS 1.x server does before its agents start: the adapter, then the plugin's
  // DatabaseMigrationService over every plugin schema (here the SQL plugin's own).
  await step("init", () => adapter.init());
  await step("migrate", () =>
    adapter.runPluginMigrations([{ name: sqlPlugin.name, schema: sqlPlugin.schema }], {
      verbose: false,
      force: false,
      dryRun: false,
    }),
  );
  await adapter.close();
  process.exit(failures ? 1 : 0);
}

if (mode === "runtime") {
  // An ElizaOS agent's own start: @elizaos/core's AgentRuntime with the SQL plugin, the URL in
  // the character's secrets as the ElizaOS CLI puts it there from .env. initialize() runs the
  // plugin's migrations unless ELIZADB_SKIP_MIGRATIONS=true, then makes the agent, its world,
  // entity, room and participation. With ELIZADB_VIA_ELIZAOS=true the agent is started as an
  // application hosting agents does: ElizaOS.addAgents(..., { autoStart: true, skipMigrations }).
  const character = { name: agentName, bio: ["drives the plugin"], secrets: { POSTGRES_URL: url } };
  const skipMigrations = process.env.ELIZADB_SKIP_MIGRATIONS === "true";
  const viaElizaOS = process.env.ELIZADB_VIA_ELIZAOS === "true";
  const elizaOS = new ElizaOS();
  let runtime = new AgentRuntime({ character, plugins: [sqlPlugin] });
  await step(
    "runtime.initialize",
    async () => {
      if (!viaElizaOS) return runtime.initialize({ skipMigrations });
      const [started] = await elizaOS.addAgents([{ character, plugins: [sqlPlugin] }], {
        autoStart: true,
        skipMigrations,
      });
      runtime = elizaOS.getAgent(started);
      return started;
    },
    (r) => [!viaElizaOS || r === agentId, viaElizaOS ? { via: "ElizaOS.addAgents", agentId: r } : null],
  );
  await step("runtime.agent", () => adapter.getAgent(agentId), (a) => [a?.name === agentName, a?.name]);
  await step(
    "runtime.room",
    () => adapter.getParticipantsForRoom(agentId),
    (ps) => [ps?.includes(agentId), ps?.length],
  );
  await (viaElizaOS ? elizaOS.stopAgents() : runtime.stop());
  await adapter.close();
  process.exit(failures ? 1 : 0);
}

if (mode === "server") {
  // What `elizaos start` (@elizaos/server 1.7.2, AgentServer.initialize) does with the database
  // before any agent starts, in its order, with its one POSTGRES_URL: the plugin's migrations
  // (there is no option to skip them), then with ENABLE_DATA_ISOLATION=true the plugin's RLS
  // functions and the server's row in `servers` — without it, the plugin's uninstallRLS, whose
  // failure the server ignores — then its default message server. The server stops at the
  // first other failure; so does this.
  const serverAdapter = createDatabaseAdapter({ postgresUrl: url }, "00000000-0000-0000-0000-000000000000");
  const steps = [
    ["server.init", () => serverAdapter.init()],
    [
      "server.migrations",
      async () => {
        const service = new DatabaseMigrationService();
        await service.initializeWithDatabase(serverAdapter.getDatabase());
        service.discoverAndRegisterPluginSchemas([sqlPlugin]);
        await service.runAllPluginMigrations({ verbose: false });
      },
    ],
  ];
  if (isolated) {
    const serverId = stringToUuid(process.env.ELIZA_SERVER_ID ?? "");
    steps.push(
      ["server.installRLSFunctions", () => installRLSFunctions(serverAdapter)],
      ["server.getOrCreateRlsServer", () => getOrCreateRlsServer(serverAdapter, serverId)],
      ["server.setServerContext", () => setServerContext(serverAdapter, serverId)],
    );
  } else {
    steps.push([
      "server.uninstallRLS",
      () =>
        uninstallRLS(serverAdapter).then(
          () => "done",
          (err) => `failed, ignored: ${err?.message ?? err}`,
        ),
    ]);
  }
  steps.push([
    "server.messageServer",
    () =>
      serverAdapter.createMessageServer({
        id: stringToUuid(`${agentName}:message-server`),
        name: agentName,
        sourceType: "eliza_default",
      }),
  ]);
  for (const [op, run] of steps) {
    await step(op, run, (r) => [true, r ?? null]);
    if (failures) break;
  }
  await serverAdapter.close();
  process.exit(failures ? 1 : 0);
}

if (mode === "foreign") {
  // Another server's agent, its ids known: every read aimed at its rows must come back empty
  // and the delete must remove nothing (the test counts that row as a superuser).
  const other = JSON.parse(process.env.ELIZADB_FOREIGN ?? "{}");
  const empty = (rs) => [Array.isArray(rs) && rs.length === 0, rs?.length];
  await step("init", () => adapter.init());
  await step("foreign.getAgent", () => adapter.getAgent(other.agentId), (a) => [a === null, a?.name ?? null]);
  await step("foreign.getRoomsByIds", () => adapter.getRoomsByIds([other.roomId]), empty);
  await step("foreign.getParticipantsForRoom", () => adapter.getParticipantsForRoom(other.roomId), empty);
  await step(
    "foreign.getMemories",
    () =>
      adapter.getMemories({ roomId: other.roomId, entityId: other.userId, tableName: "messages", count: 50 }),
    empty,
  );
  await step("foreign.getMemoryById", () => adapter.getMemoryById(other.target), (m) => [m === null, m]);
  await step("foreign.countMemories", () => adapter.countMemories(other.roomId, false, "messages"), (n) => [n === 0, n]);
  await step(
    "foreign.getLogs",
    () => adapter.getLogs({ roomId: other.roomId, entityId: other.userId, count: 10 }),
    empty,
  );
  await step("foreign.deleteMemory", () => adapter.deleteMemory(other.target));
  await adapter.close();
  process.exit(failures ? 1 : 0);
}

if (mode === "recall") {
  // Knowledge carried over from 0.1 (elizadb move-to-eliza1), read the way the 1.x knowledge
  // plugin reads it: fragments by similarity (tableName "knowledge"), documents listed from the
  // agent's own room (tableName "documents"). ELIZADB_RECALL: {embedding, fragment, document}.
  const want = JSON.parse(process.env.ELIZADB_RECALL ?? "{}");
  await step("init", () => adapter.init());
  await step("ensureEmbeddingDimension", () => adapter.ensureEmbeddingDimension(want.embedding.length));
  await step(
    "recall.fragments",
    () =>
      adapter.searchMemories({ tableName: "knowledge", embedding: want.embedding, count: 3, match_threshold: 0.1 }),
    (ms) => [
      ms?.[0]?.id === want.fragment && ms[0].metadata?.documentId === want.document,
      ms?.map((m) => ({ id: m.id, text: m.content?.text, similarity: m.similarity })),
    ],
  );
  await step(
    "recall.documents",
    () => adapter.getMemories({ tableName: "documents", roomId: agentId, count: 100 }),
    (ms) => [
      ms?.length === 1 && ms[0].id === want.document && ms[0].metadata?.type === "document",
      ms?.map((m) => m.content?.text),
    ],
  );
  await adapter.close();
  process.exit(failures ? 1 : 0);
}

// ---- embeddings: clustered, unit length (never i.i.d. random vectors) ------------------------
function prng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  };
}
const unit = (v) => {
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
};
const seedOf = (text) => createHash("sha256").update(text).digest().readUInt32LE(0);
const topic = (name) => {
  const r = prng(seedOf(name));
  return Array.from({ length: DIMS }, r);
};
// A member of a topic: the topic's direction plus a little noise of its own.
const near = (base, key, noise) => {
  const r = prng(seedOf(key));
  return unit(base.map((x) => x + noise * r()));
};
const TOPICS = ["weather", "music", "travel"];
const topics = Object.fromEntries(TOPICS.map((t) => [t, topic(t)]));

// ---- ids -----------------------------------------------------------------------------------
const id = (what) => stringToUuid(`${agentName}:${what}`);
const userId = id("user");
const worldId = id("world");
const roomId = id("room");
const memoryIds = [];
// Under isolation the plugin's memory policy needs an entity context, which getMemories sets
// from entityId.
const roomMessages = () =>
  adapter.getMemories({
    roomId,
    tableName: "messages",
    count: 50,
    ...(isolated ? { entityId: userId } : {}),
  });

// ---- node-postgres itself through the pooler: TLS from the URL, named prepared statements ----
await step(
  "pg.connectFromUrl",
  async () => {
    const client = new pg.Client({ connectionString: url, application_name: "elizadb-plugin-drive" });
    await client.connect();
    try {
      const { rows } = await client.query(
        "SELECT current_user AS user, current_database() AS database," +
          " current_setting('application_name') AS app",
      );
      return { ...rows[0], authorized: client.connection.stream.authorized === true };
    } finally {
      await client.end();
    }
  },
  (r) => [r.authorized, r],
);
await step(
  "pg.namedPreparedStatements",
  async () => {
    // Three clients, each preparing the same name and running it many times: through a
    // transaction-mode PgBouncer this needs max_prepared_statements.
    const pool = new pg.Pool({ connectionString: url, max: 3 });
    try {
      const runs = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          pool.query({ name: "elizadb_probe", text: "SELECT $1::int + 1 AS n", values: [i] }),
        ),
      );
      return runs.map((r) => r.rows[0].n);
    } finally {
      await pool.end();
    }
  },
  (ns) => [ns.every((n, i) => n === i + 1), { statements: ns.length }],
);

// ---- the adapter, as an agent's runtime uses it ---------------------------------------------
await step("init", () => adapter.init());
await step("isReady", () => adapter.isReady(), (r) => [r === true, r]);
await step("ensureEmbeddingDimension", () => adapter.ensureEmbeddingDimension(DIMS));
await step("createAgent", () =>
  adapter.createAgent({ id: agentId, name: agentName, username: agentName, bio: "drives the plugin" }),
);
await step("getAgent", () => adapter.getAgent(agentId), (a) => [a?.id === agentId, a?.name]);
await step("createEntities", () =>
  adapter.createEntities([
    { id: agentId, names: [agentName], agentId, metadata: {} },
    { id: userId, names: ["a user"], agentId, metadata: { source: "test" } },
  ]),
);
await step(
  "getEntitiesByIds",
  () => adapter.getEntitiesByIds([agentId, userId]),
  (es) => [es?.length === 2, es?.map((e) => e.names[0]).sort()],
);
await step("createWorld", () =>
  adapter.createWorld({ id: worldId, name: "a world", agentId, messageServerId: worldId }),
);
await step("getWorld", () => adapter.getWorld(worldId), (w) => [w?.id === worldId, w?.name]);
await step("createRooms", () =>
  adapter.createRooms([
    { id: roomId, name: "a room", agentId, source: "test", type: "GROUP", worldId },
  ]),
);
await step("getRoomsByIds", () => adapter.getRoomsByIds([roomId]), (rs) => [rs?.length === 1, rs?.[0]?.name]);
await step("addParticipantsRoom", () => adapter.addParticipantsRoom([agentId, userId], roomId));
await step(
  "getParticipantsForRoom",
  () => adapter.getParticipantsForRoom(roomId),
  (ps) => [ps?.length === 2 && ps.includes(userId), ps?.length],
);
await step("setParticipantUserState", () =>
  adapter.setParticipantUserState(roomId, userId, "FOLLOWED"),
);
await step(
  "getParticipantUserState",
  () => adapter.getParticipantUserState(roomId, userId),
  (s) => [s === "FOLLOWED", s],
);

// 12 memories, four per topic; the query is close to "weather message 1" only.
const texts = [];
for (let i = 0; i < 12; i++) texts.push(`${TOPICS[i % 3]} message ${Math.floor(i / 3)}`);
await step(
  "createMemory",
  async () => {
    for (const text of texts) {
      const [name] = text.split(" ");
      const memoryId = await adapter.createMemory(
        {
          id: id(text),
          entityId: userId,
          agentId,
          roomId,
          worldId,
          content: { text },
          embedding: near(topics[name], text, 0.6),
          createdAt: Date.now(),
        },
        "messages",
      );
      memoryIds.push(memoryId);
    }
    return memoryIds.length;
  },
  (n) => [n === 12, n],
);
const target = id("weather message 1");
const query = near(near(topics.weather, "weather message 1", 0.6), "the query", 0.05);
await step(
  "searchMemories",
  () => adapter.searchMemories({ embedding: query, tableName: "messages", roomId, count: 5 }),
  (ms) => {
    const ranked = (ms ?? []).map((m) => ({ text: m.content.text, similarity: m.similarity }));
    if (isolated) return [ms?.length === 0, { ranked }];
    const descending = ranked.every((m, i) => i === 0 || ranked[i - 1].similarity >= m.similarity);
    return [ms?.[0]?.id === target && ranked.length === 5 && descending, { ranked }];
  },
);
await step(
  "searchMemories.threshold",
  () =>
    adapter.searchMemories({
      embedding: query,
      tableName: "messages",
      roomId,
      count: 10,
      match_threshold: 0.8,
    }),
  (ms) => [
    isolated ? ms?.length === 0 : ms?.length === 1 && ms[0].id === target,
    ms?.map((m) => m.content.text),
  ],
);
// The caller's only handle on the entity context: the adapter's withIsolationContext. The
// search inside it still runs on another pooled connection, outside that transaction.
await step(
  "searchMemories.inIsolationContext",
  () =>
    adapter.withIsolationContext(userId, () =>
      adapter.searchMemories({ embedding: query, tableName: "messages", roomId, count: 5 }),
    ),
  (ms) => [isolated ? ms?.length === 0 : ms?.[0]?.id === target, ms?.length],
);
// ElizaOS's message service wraps a message's handling in runtime.withEntityContext when the
// runtime has one; in this core and plugin neither the runtime nor the adapter defines it.
await step(
  "withEntityContext",
  async () => ({
    runtime: typeof AgentRuntime.prototype.withEntityContext,
    adapter: typeof adapter.withEntityContext,
  }),
  (r) => [true, r],
);
await step(
  "getMemories",
  () => roomMessages(),
  (ms) => [ms?.length === 12 && ms.every((m) => m.agentId === agentId), ms?.length],
);
await step(
  "getMemoryById",
  () => adapter.getMemoryById(target),
  (m) =>
    isolated
      ? [m === null, m]
      : [m?.content?.text === "weather message 1" && m.embedding?.length === DIMS, m?.content?.text],
);
await step(
  "countMemories",
  () => adapter.countMemories(roomId, false, "messages"),
  (n) => [n === (isolated ? 0 : 12), n],
);
await step("setCache", () => adapter.setCache("kept", { answer: 42 }), (r) => [r === true, r]);
await step("setCache.removed", () => adapter.setCache("removed", [1, 2]), (r) => [r === true, r]);
await step("getCache", () => adapter.getCache("kept"), (v) => [v?.answer === 42, v]);
await step("deleteCache", () => adapter.deleteCache("removed"), (r) => [r === true, r]);
await step("getCache.deleted", () => adapter.getCache("removed"), (v) => [v === undefined, v ?? null]);
await step("log", () =>
  adapter.log({ body: { action: "REPLY", tokens: 42 }, entityId: userId, roomId, type: "action" }),
);
await step(
  "getLogs",
  () =>
    adapter.getLogs({ roomId, type: "action", count: 10, ...(isolated ? { entityId: userId } : {}) }),
  (ls) => [ls?.length === 1 && ls[0].body?.tokens === 42, ls?.length],
);
await step("createRelationship", () =>
  adapter.createRelationship({ sourceEntityId: agentId, targetEntityId: userId, tags: ["knows"] }),
);
await step(
  "getRelationship",
  () => adapter.getRelationship({ sourceEntityId: agentId, targetEntityId: userId }),
  (r) => [r?.tags?.includes("knows"), r?.tags],
);
const removed = id("music message 3");
await step("deleteMemory", () => adapter.deleteMemory(removed));
// Under isolation the delete matched no row: the memory is still there.
const afterDelete = isolated ? 12 : 11;
await step(
  "countMemories.afterDelete",
  () => adapter.countMemories(roomId, false, "messages"),
  (n) => [n === (isolated ? 0 : 11), n],
);
await step("getMemoryById.deleted", () => adapter.getMemoryById(removed), (m) => [m === null, m]);
await step(
  "getMemories.afterDelete",
  () => roomMessages(),
  (ms) => [
    ms?.length === afterDelete && ms.some((m) => m.id === removed) === isolated,
    ms?.length,
  ],
);
report("summary", failures === 0, {
  agentId,
  userId,
  worldId,
  roomId,
  target,
  removed,
  memoryIds,
  isolated,
});
await adapter.close();
process.exit(failures ? 1 : 0);
