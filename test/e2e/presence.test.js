// Presence and typing expiry through the Hub, in-process (dev mode: memory
// presence) and with the Redis presence store.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { startServer, connect, waitFor, ack, sleep, closeAll } from "./harness.js";
import { Redis, uid as runID } from "./fleet.js";

const redisURL = process.env.REDIS_URL || "redis://127.0.0.1:6379";

async function redisReachable() {
  const u = new URL(redisURL);
  return new Promise((resolve) => {
    const s = net.connect(Number(u.port || 6379), u.hostname, () => { s.destroy(); resolve(true); });
    s.on("error", () => resolve(false));
    s.setTimeout(1000, () => { s.destroy(); resolve(false); });
  });
}

const presenceOf = (s, user) => s.received.filter((e) => e.event === "agent:presence" && e.data.user_id === user).map((e) => e.data.status);

function suite(name, envFn) {
  describe(name, () => {
    let srv, env, skip = false;
    before(async (t) => {
      env = await envFn();
      if (env === null) { skip = true; return; }
      srv = await startServer({ env: { TYPING_TTL_SECONDS: "1", ...env } });
    });
    after(async () => {
      if (srv) await srv.stop();
      if (env?.REDIS_KEY_PREFIX) {
        // This run's keys only: the stream, presence and sessions.
        const r = await new Redis().open(redisURL);
        try { await r.deletePrefix(env.REDIS_KEY_PREFIX); } finally { r.close(); }
      }
    });
    const uid = (u) => `${u}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

    test("two tabs: closing one keeps the user online; closing both broadcasts offline once", async (t) => {
      if (skip) return t.skip("Redis is not reachable");
      const alice = uid("alice");
      const watcher = await connect(srv.url, await srv.token(uid("watcher"), ["acme"]));
      await ack(watcher, "account:subscribe", { account_id: "acme" });
      const tab1 = await connect(srv.url, await srv.token(alice, ["acme"]));
      assert.equal(await waitFor(watcher, "agent:presence", (d) => d.user_id === alice).then((d) => d.status), "online");
      const tab2 = await connect(srv.url, await srv.token(alice, ["acme"]));
      tab1.close();
      await sleep(300);
      assert.deepEqual(presenceOf(watcher, alice), ["online"], "closing one tab must not mark the user offline");
      const list = await ack(watcher, "agent:presence:list", { account_id: "acme" });
      assert.equal(list.presence.find((p) => p.user_id === alice)?.status, "online");
      tab2.close();
      await waitFor(watcher, "agent:presence", (d) => d.user_id === alice && d.status === "offline");
      await sleep(300);
      assert.deepEqual(presenceOf(watcher, alice), ["online", "offline"]);
      const after = await ack(watcher, "agent:presence:list", { account_id: "acme" });
      assert.equal(after.presence.find((p) => p.user_id === alice), undefined);
      watcher.close();
    });

    test("away survives a new tab; status changes reach every account room of the user once", async (t) => {
      if (skip) return t.skip("Redis is not reachable");
      const bob = uid("bob");
      const both = await connect(srv.url, await srv.token(uid("both"), ["acme", "globex"]));
      await ack(both, "account:subscribe", { account_id: "acme" });
      await ack(both, "account:subscribe", { account_id: "globex" });
      const onlyGlobex = await connect(srv.url, await srv.token(uid("g"), ["globex"]));
      await ack(onlyGlobex, "account:subscribe", { account_id: "globex" });
      const tab1 = await connect(srv.url, await srv.token(bob, ["acme", "globex"]));
      await waitFor(onlyGlobex, "agent:presence", (d) => d.user_id === bob && d.status === "online");
      assert.deepEqual(await ack(tab1, "agent:status", { status: "away" }), { ok: true, status: "away" });
      await waitFor(onlyGlobex, "agent:presence", (d) => d.user_id === bob && d.status === "away");
      const tab2 = await connect(srv.url, await srv.token(bob, ["acme", "globex"]));
      await sleep(300);
      assert.deepEqual(presenceOf(both, bob), ["online", "away"], "one broadcast per change even in two account rooms; a new tab keeps away");
      const list = await ack(both, "agent:presence:list", { account_id: "acme" });
      assert.equal(list.presence.find((p) => p.user_id === bob)?.status, "away");
      closeAll(tab1, tab2, both, onlyGlobex);
    });

    test("presence list only for accounts the token allows", async (t) => {
      if (skip) return t.skip("Redis is not reachable");
      const s = await connect(srv.url, await srv.token(uid("m"), ["acme"]));
      const res = await ack(s, "agent:presence:list", { account_id: "globex" });
      assert.equal(res.error, "forbidden");
      s.close();
    });

    test("typing without a stop expires; disconnecting ends it too", async (t) => {
      if (skip) return t.skip("Redis is not reachable");
      const conv = uid("c");
      const a = await connect(srv.url, await srv.token(uid("ta"), ["acme"]));
      const b = await connect(srv.url, await srv.token(uid("tb"), ["acme"]));
      await ack(a, "conversation:join", { conversation_id: conv });
      await ack(b, "conversation:join", { conversation_id: conv });
      const started = Date.now();
      await ack(a, "conversation:typing:start", { conversation_id: conv });
      await waitFor(b, "conversation:typing", (d) => d.typing);
      const stop = await waitFor(b, "conversation:typing", (d) => !d.typing, 4000);
      assert.equal(stop.conversation_id, conv);
      const took = Date.now() - started;
      assert.ok(took >= 900 && took < 3000, `expired after ${took} ms with TYPING_TTL_SECONDS=1`);
      b.received = [];
      await ack(a, "conversation:typing:start", { conversation_id: conv });
      await waitFor(b, "conversation:typing", (d) => d.typing);
      a.close();
      await waitFor(b, "conversation:typing", (d) => !d.typing, 500);
      b.close();
    });
  });
}

suite("memory presence (dev mode)", async () => ({}));
suite("Redis presence", async () => {
  if (!(await redisReachable())) {
    if (process.env.REALTIME_REQUIRE_SERVICES === "1") throw new Error(`Redis is required at ${redisURL}`);
    console.log(`# Redis not reachable at ${redisURL}: start it with redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no`);
    return null;
  }
  return { REDIS_URL: redisURL, REDIS_KEY_PREFIX: `e2e-presence-${runID()}:` };
});
