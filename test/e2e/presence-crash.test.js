// Presence across instances that crash, and across a Redis restart, with the
// real binary and a private redis-server of the test's own.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { once } from "node:events";
import { startServer, connect, waitFor, ack, sleep, freePort, closeAll } from "./harness.js";

function have(cmd) {
  try { execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }); return true; } catch { return false; }
}
const missing = !have("redis-server") || !have("redis-cli");
if (missing && process.env.REALTIME_REQUIRE_SERVICES === "1") throw new Error("redis-server and redis-cli are required");

let redisPort, redis;
async function startRedis() {
  redis = spawn("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  for (let i = 0; i < 100; i++) {
    try { if (cli("PING") === "PONG") return; } catch {}
    await sleep(50);
  }
  throw new Error("private redis-server did not start");
}
async function killRedis() {
  redis.kill("SIGKILL");
  await once(redis, "exit");
}
const cli = (...args) => execFileSync("redis-cli", ["-p", String(redisPort), ...args]).toString().trim();

before(async () => {
  if (missing) return;
  redisPort = await freePort();
  await startRedis();
});
after(async () => { if (redis && redis.exitCode === null) await killRedis(); });

const TTL = 3; // seconds; heartbeats every second
const env = () => ({ REDIS_URL: `redis://127.0.0.1:${redisPort}`, PRESENCE_TTL_SECONDS: String(TTL) });
const listed = async (s, user) => (await ack(s, "agent:presence:list", { account_id: "acme" })).presence.find((p) => p.user_id === user)?.status;

test("a user on two instances stays online when one dies; offline within TTL + one heartbeat when both die, broadcast once", async (t) => {
  if (missing) return t.skip("redis-server / redis-cli not installed");
  const [a, b, c] = await Promise.all([startServer({ env: env() }), startServer({ env: env() }), startServer({ env: env() })]);
  try {
    const watcher = await connect(c.url, await c.token("watcher", ["acme"]));
    await ack(watcher, "account:subscribe", { account_id: "acme" });
    const onA = await connect(a.url, await a.token("carol", ["acme"]));
    const onB = await connect(b.url, await b.token("carol", ["acme"]));
    assert.equal(await listed(watcher, "carol"), "online");
    assert.match(cli("HGET", "agent:presence", "carol"), /"status":"online"/);

    await a.stop("SIGKILL");
    await sleep((TTL + 2) * 1000);
    assert.equal(await listed(watcher, "carol"), "online", "carol is still connected to b");
    const statuses = () => watcher.received.filter((e) => e.event === "agent:presence" && e.data.user_id === "carol").map((e) => e.data.status);
    // Through the Redis adapter c's watcher may have seen carol come online; never offline.
    assert.ok(!statuses().includes("offline"), `carol went offline while connected to b: ${statuses()}`);
    watcher.received = [];

    const killedAt = Date.now();
    await b.stop("SIGKILL");
    const off = await waitFor(watcher, "agent:presence", (d) => d.user_id === "carol", (TTL + TTL / 3 + 2) * 1000);
    const took = (Date.now() - killedAt) / 1000;
    assert.equal(off.status, "offline");
    assert.ok(took <= TTL + TTL / 3 + 1, `offline after ${took}s, TTL ${TTL}s`);
    await sleep(2000);
    assert.deepEqual(statuses(), ["offline"], "the offline change is broadcast once");
    assert.equal(cli("HGET", "agent:presence", "carol"), "");
    assert.equal(cli("EXISTS", "agent:heartbeat:carol"), "0");
    closeAll(watcher, onA, onB);
  } finally {
    await Promise.all([a.stop("SIGKILL"), b.stop("SIGKILL"), c.stop()]);
  }
});

test("Redis restarted empty: live connections are registered again and presence is right", async (t) => {
  if (missing) return t.skip("redis-server / redis-cli not installed");
  const srv = await startServer({ env: env() });
  try {
    const watcher = await connect(srv.url, await srv.token("watcher2", ["acme"]));
    const dave = await connect(srv.url, await srv.token("dave", ["acme"]));
    assert.equal(await listed(watcher, "dave"), "online");
    await killRedis();
    // While Redis is down the socket keeps working and presence fails fast.
    const res = await ack(watcher, "agent:presence:list", { account_id: "acme" });
    assert.equal(res.error, "presence_unavailable");
    await ack(watcher, "account:subscribe", { account_id: "acme" });
    await startRedis(); // empty: it keeps nothing on disk
    const deadline = Date.now() + (TTL + 3) * 1000;
    while (Date.now() < deadline && !/online/.test(cli("HGET", "agent:presence", "dave"))) await sleep(200);
    assert.match(cli("HGET", "agent:presence", "dave"), /"status":"online"/);
    assert.equal(await listed(watcher, "dave"), "online");
    dave.close();
    await waitFor(watcher, "agent:presence", (d) => d.user_id === "dave" && d.status === "offline");
    closeAll(watcher);
  } finally {
    await srv.stop();
  }
});
