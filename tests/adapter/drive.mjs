// Drives the unmodified @elizaos/adapter-postgres (0.1.9) against a deployed eliza-db stack, the
// way an ElizaOS agent uses it, and prints one JSON line per operation: {"op", "ok", "detail"}.
// Exit status 0 only if every operation succeeded.
//
//   ELIZADB_URL=postgresql://eliza_agent:...@127.0.0.1:PORT/eliza ELIZADB_CA_FILE=ca.pem \
//     node drive.mjs            (or: node drive.mjs URL CA_FILE)
//
// ELIZADB_HOLD=1: before closing, print {"op": "hold"} and wait for a line (or EOF) on stdin, so
// that a test can look at the adapter's open connections from the server and the pooler.
//
// The embedding size comes from @elizaos/core's getEmbeddingConfig(): 1536 only with
// USE_OPENAI_EMBEDDING=true, else 384. Our stacks default to 1536, so that is the default here;
// core reads its settings when it is first imported, hence the dynamic import below.
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import pg from "pg";

process.env.USE_OPENAI_EMBEDDING ??= "true";
process.env.DEFAULT_LOG_LEVEL ??= "warn"; // the adapter's pino logger also writes to stdout
const { PostgresDatabaseAdapter } = await import("@elizaos/adapter-postgres");

const DIMS = process.env.USE_OPENAI_EMBEDDING.toLowerCase() === "true" ? 1536 : 384;
const url = process.argv[2] ?? process.env.ELIZADB_URL;
const caFile = process.argv[3] ?? process.env.ELIZADB_CA_FILE;
if (!url || !caFile) {
  console.error("usage: node drive.mjs URL CA_FILE (or ELIZADB_URL, ELIZADB_CA_FILE)");
  process.exit(2);
}

// A run that hangs is a failure, not a stuck CI job.
const watchdogMs = Number(process.env.ELIZADB_DRIVE_TIMEOUT_MS ?? 100000);
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
  try {
    const result = await run();
    const [ok, detail] = check(result);
    report(op, Boolean(ok), detail);
    return result;
  } catch (err) {
    report(op, false, `${err?.code ?? ""} ${err?.message ?? err}`.trim());
    return undefined;
  }
}

// TLS is configured here, not from the URL: node-postgres lets parameters parsed from the
// connection string (sslmode, sslrootcert) replace the `ssl` object, so drop them and say
// exactly what we mean. With `ca` set and rejectUnauthorized true, node checks the chain
// against the stack CA only, and checks the host name (or IP address) from the URL against the
// certificate's SANs: libpq's verify-full.
const connectionString = (() => {
  const u = new URL(url);
  for (const key of ["sslmode", "sslrootcert", "sslcert", "sslkey"]) u.searchParams.delete(key);
  return u.toString();
})();
const ca = readFileSync(caFile, "utf8");
const ssl = { ca, rejectUnauthorized: true };
const APP = "elizadb-adapter-drive";

// ---- verify-full is real: a name outside the certificate is refused -------------------------
await step(
  "tls.wrongServerName",
  async () => {
    const client = new pg.Client({
      connectionString,
      ssl: { ...ssl, servername: "not-in-the-certificate.invalid" },
      connectionTimeoutMillis: 5000,
    });
    try {
      await client.connect();
      await client.end();
      return "connected";
    } catch (err) {
      return err.code ?? err.message;
    }
  },
  (r) => [r === "ERR_TLS_CERT_ALTNAME_INVALID", `refused: ${r}`],
);

// ---- embeddings with structure --------------------------------------------------------------
// Three topics in a 16-dimensional latent space, projected to DIMS by a fixed random matrix,
// plus a little noise, then normalised: near neighbours are meaningful, unlike i.i.d. vectors.
// Seeded, so every run stores the same vectors.
function mulberry32(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(20250101);
const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
const LATENT = 16;
const projection = Array.from({ length: DIMS }, () => Array.from({ length: LATENT }, gauss));
const jitter = (latent, scale) => latent.map((x) => x + scale * gauss());
function embed(latent) {
  const v = projection.map((row) => row.reduce((s, w, i) => s + w * latent[i], 0) + 0.01 * gauss());
  const norm = Math.hypot(...v);
  return v.map((x) => x / norm);
}
const topics = ["weather", "music", "databases"];
const centres = topics.map(() => Array.from({ length: LATENT }, gauss));
const PER_TOPIC = 4;

// ---- the agent's world ----------------------------------------------------------------------
const db = new PostgresDatabaseAdapter({ connectionString, ssl, application_name: APP });
const agent = randomUUID();
const user = randomUUID();
const other = randomUUID();

const initialised = await step("init", () => db.init(), () => [true, "schema found; no DDL run"]);
if (initialised === undefined && failures > 0) {
  // Nothing else can work; do not spend minutes in the adapter's retries.
  await db.close().catch(() => {});
  process.exit(1);
}

// What the adapter's pooled connection really is: a TLS socket whose chain and name were verified.
await step(
  "tls.adapterConnection",
  async () => {
    const client = await db.pool.connect();
    try {
      const s = client.connection.stream;
      const { rows } = await client.query(
        `SELECT current_user AS "user", current_database() AS database, inet_server_port() AS "serverPort",
                (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS "serverLegTls"`,
      );
      return {
        authorized: s.authorized === true,
        protocol: s.getProtocol?.(),
        subjectaltname: s.getPeerCertificate?.().subjectaltname,
        ...rows[0],
      };
    } finally {
      client.release();
    }
  },
  (r) => [r.authorized && r.protocol && r.user === "eliza_agent" && r.serverLegTls === true, r],
);

await step(
  "createAccount",
  async () => [
    await db.createAccount({ id: agent, name: "Test Agent", username: "agent", email: "agent@example.test", details: { role: "agent" } }),
    await db.createAccount({ id: user, name: "Ada", username: "ada", email: "ada@example.test", details: { summary: "" } }),
    await db.createAccount({ id: other, name: "Bob", username: "bob", email: "", details: {} }),
  ],
  (r) => [r.every((x) => x === true), { agent, user, other }],
);
await step(
  "getAccountById",
  () => db.getAccountById(user),
  (a) => [a?.id === user && a.name === "Ada" && a.details?.summary === "", a && { id: a.id, name: a.name }],
);

const room = await step("createRoom", () => db.createRoom(), (r) => [typeof r === "string", r]);
await step(
  "addParticipant",
  async () => [await db.addParticipant(agent, room), await db.addParticipant(user, room)],
  (r) => [r.every((x) => x === true), r],
);
await step(
  "getParticipantsForAccount",
  () => db.getParticipantsForAccount(user),
  (rows) => [rows.length === 1 && rows[0].roomId === room && "last_message_read" in rows[0], rows],
);
await step(
  "getParticipantsForRoom",
  () => db.getParticipantsForRoom(room),
  (ids) => [ids.length === 2 && ids.includes(agent) && ids.includes(user), ids],
);
await step(
  "setParticipantUserState",
  async () => {
    await db.setParticipantUserState(room, user, "FOLLOWED");
    return db.getParticipantUserState(room, user);
  },
  (state) => [state === "FOLLOWED", state],
);

// ---- memories -------------------------------------------------------------------------------
const memories = []; // {id, topic, latent}
await step(
  "createMemory",
  async () => {
    for (const [t, topic] of topics.entries()) {
      for (let i = 0; i < PER_TOPIC; i++) {
        const latent = jitter(centres[t], 0.35);
        const id = randomUUID();
        await db.createMemory(
          {
            id, userId: user, agentId: agent, roomId: room,
            content: { text: `${topic} message ${i}`, source: "test" },
            embedding: embed(latent),
          },
          "messages",
        );
        memories.push({ id, topic, latent });
      }
    }
    return memories.length;
  },
  (n) => [n === topics.length * PER_TOPIC, { created: n, dims: DIMS }],
);
const target = memories[1]; // the second weather memory

// Almost the same vector as `target`: the adapter itself looks for a neighbour within L2 0.05
// and stores the new row with "unique" = false.
const duplicate = randomUUID();
await step(
  "createMemory.nearDuplicate",
  async () => {
    await db.createMemory(
      {
        id: duplicate, userId: user, agentId: agent, roomId: room,
        content: { text: "weather message 1 (again)", source: "test" },
        embedding: embed(jitter(target.latent, 0.002)),
      },
      "messages",
    );
    return db.getMemoryById(duplicate);
  },
  (m) => [m?.unique === false, { id: duplicate, unique: m?.unique, isUnique: m?.isUnique }],
);

// The levenshtein cache lookup reads content->'content'->>'text' (see getCachedEmbeddings). It is
// not scoped to an agent or room, so the text carries a tag of this run: rows of earlier runs in
// the same database stay more than 2 edits away.
const runTag = randomUUID().slice(0, 8);
const cachedText = `what is the weather in Paris today? (${runTag})`;
const cachedId = randomUUID();
const cachedEmbedding = embed(jitter(centres[0], 0.35));
await step(
  "createMemory.withCachedText",
  () =>
    db.createMemory(
      {
        id: cachedId, userId: user, agentId: agent, roomId: room,
        content: { text: cachedText, content: { text: cachedText } },
        embedding: cachedEmbedding,
      },
      "messages",
    ),
  () => [true, { id: cachedId }],
);

const total = topics.length * PER_TOPIC + 2;
await step(
  "getMemories",
  () => db.getMemories({ roomId: room, tableName: "messages", agentId: agent, count: 50 }),
  (rows) => [
    rows.length === total && rows.every((m) => typeof m.content === "object"),
    { rows: rows.length, expected: total },
  ],
);
await step(
  "countMemories",
  async () => [await db.countMemories(room, true, "messages"), await db.countMemories(room, false, "messages")],
  ([unique, all]) => [unique === total - 1 && all === total, { unique, all }],
);

// A query close to `target`: it must come back first, followed by the rest of its topic.
await step(
  "searchMemoriesByEmbedding",
  () =>
    db.searchMemoriesByEmbedding(embed(jitter(target.latent, 0.05)), {
      tableName: "messages", roomId: room, agentId: agent, unique: true, count: PER_TOPIC,
    }),
  (rows) => {
    const topicOf = (id) => memories.find((m) => m.id === id)?.topic ?? (id === cachedId ? "weather" : "?");
    const ranked = rows.map((r) => ({ text: r.content.text, similarity: Number(r.similarity).toFixed(3) }));
    return [
      rows.length === PER_TOPIC && rows[0].id === target.id && rows.every((r) => topicOf(r.id) === "weather"),
      { expectedFirst: `weather message 1`, ranked },
    ];
  },
);
await step(
  "searchMemoriesByEmbedding.threshold",
  () =>
    db.searchMemoriesByEmbedding(embed(jitter(target.latent, 0.05)), {
      tableName: "messages", roomId: room, agentId: agent, match_threshold: 0.9, count: 10,
    }),
  // Only `target` and its near-duplicate lie within L2 0.1 of the query.
  (rows) => [
    rows.length === 2 && rows.map((r) => r.id).sort().join() === [target.id, duplicate].sort().join(),
    rows.map((r) => r.content.text),
  ],
);

// getCachedEmbeddings as ElizaOS core calls it (threshold 2). node-postgres returns a pgvector
// value as the text "[...]" unless a type parser is registered, and the adapter then drops every
// row (it keeps only rows whose embedding is an array): out of the box it always misses.
const cacheQuery = {
  query_table_name: "messages", query_threshold: 2, query_input: `what is the weather in paris today (${runTag})`,
  query_field_name: "content", query_field_sub_name: "text", query_match_count: 10,
};
await step(
  "getCachedEmbeddings.stockTypes",
  () => db.getCachedEmbeddings(cacheQuery),
  (rows) => [Array.isArray(rows), { returned: rows.length, note: "vector arrives as text; adapter drops such rows" }],
);
// Register a parser for the vector type on the same pg module the adapter uses (what pgvector's
// Node package does), then the levenshtein lookup hands back the stored embedding.
await step(
  "getCachedEmbeddings",
  async () => {
    if (!(db.pool instanceof pg.Pool)) throw new Error("adapter uses another copy of pg");
    const { rows } = await db.query("SELECT 'vector'::regtype::oid AS oid");
    pg.types.setTypeParser(Number(rows[0].oid), (text) => JSON.parse(text));
    return db.getCachedEmbeddings(cacheQuery);
  },
  (rows) => {
    const first = rows[0];
    const same = first?.embedding?.length === DIMS &&
      first.embedding.every((x, i) => Math.abs(x - cachedEmbedding[i]) < 1e-6);
    return [rows.length === 1 && first.levenshtein_score === 2 && same, {
      returned: rows.length, levenshtein: first?.levenshtein_score, dims: first?.embedding?.length, sameEmbedding: same,
    }];
  },
);

// ---- goals, relationships, logs, cache ------------------------------------------------------
const goal = randomUUID();
await step(
  "createGoal",
  async () => {
    await db.createGoal({
      id: goal, roomId: room, userId: user, name: "learn the stack", status: "IN_PROGRESS",
      objectives: [{ description: "deploy", completed: false }],
    });
    return db.getGoals({ roomId: room, onlyInProgress: true, count: 10 });
  },
  (rows) => [rows.length === 1 && rows[0].id === goal && rows[0].objectives[0].description === "deploy", { id: goal }],
);
await step(
  "updateGoal",
  async () => {
    await db.updateGoal({
      id: goal, roomId: room, userId: user, name: "learn the stack", status: "DONE",
      objectives: [{ description: "deploy", completed: true }],
    });
    return [await db.getGoals({ roomId: room, onlyInProgress: true }), await db.getGoals({ roomId: room, userId: user })];
  },
  ([open, all]) => [open.length === 0 && all[0]?.status === "DONE" && all[0].objectives[0].completed === true, all[0]?.status],
);
await step(
  "createRelationship",
  () => db.createRelationship({ userA: agent, userB: user }),
  (r) => [r === true, r],
);
await step(
  "getRelationship",
  () => db.getRelationship({ userA: user, userB: agent }), // either order finds it
  (r) => [r?.userA === agent && r?.userB === user, r && { id: r.id, status: r.status }],
);
await step(
  "log",
  () => db.log({ body: { action: "REPLY", tokens: 42 }, userId: user, roomId: room, type: "action" }),
  () => [true, "written; checked by the test"],
);
await step(
  "setCache",
  async () => [
    await db.setCache({ key: "kept", agentId: agent, value: JSON.stringify({ v: 1 }) }),
    await db.setCache({ key: "dropped", agentId: agent, value: JSON.stringify({ v: 2 }) }),
    await db.setCache({ key: "kept", agentId: agent, value: JSON.stringify({ v: 3 }) }), // upsert
  ],
  (r) => [r.every((x) => x === true), r],
);
await step(
  "getCache",
  () => db.getCache({ key: "kept", agentId: agent }),
  (v) => [JSON.parse(v ?? "null")?.v === 3, v],
);
await step(
  "deleteCache",
  async () => [await db.deleteCache({ key: "dropped", agentId: agent }), await db.getCache({ key: "dropped", agentId: agent })],
  ([deleted, after]) => [deleted === true && after === undefined, { deleted, after: after ?? null }],
);
await step(
  "removeMemory",
  async () => {
    await db.removeMemory(memories.at(-1).id, "messages");
    return [await db.getMemoryById(memories.at(-1).id), await db.countMemories(room, false, "messages")];
  },
  ([gone, all]) => [gone === null && all === total - 1, { removed: memories.at(-1).id, left: all }],
);

// ---- hand over to the test, then close ------------------------------------------------------
report("summary", failures === 0, {
  failures, agent, user, other, room, goal, target: target.id, duplicate, cached: cachedId,
  removed: memories.at(-1).id, applicationName: APP,
});
if (process.env.ELIZADB_HOLD === "1") {
  report("hold", true, "waiting for stdin");
  await new Promise((resolve) => {
    process.stdin.once("data", resolve);
    process.stdin.once("end", resolve);
    process.stdin.resume();
  });
}
// The adapter's pool and its beforeExit handler keep the process alive: close, then exit.
await db.close();
process.exit(failures === 0 ? 0 : 1);
