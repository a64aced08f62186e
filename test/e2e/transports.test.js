// The official socket.io-client over each transport: websocket only, HTTP
// long-polling only (networks that block websockets), the two mixed in one
// conversation, and `auth` as a callback that returns a fresh token on every
// (re)connection.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { startServer, connect, waitFor, ack, sleep, closeAll } from "./harness.js";

let srv;
before(async () => { srv = await startServer(); });
after(async () => { await srv.stop(); });

const only = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"], upgrade: false },
};

for (const [name, opts] of Object.entries(only)) {
  test(`${name} only: client events with acknowledgements, server events, presence`, { timeout: 20000 }, async () => {
    const conv = `c-${name}`;
    const s = await connect(srv.url, await srv.token(`u-${name}`, ["acme"]), opts);
    assert.equal(s.io.engine.transport.name, name);

    assert.deepEqual(await ack(s, "account:subscribe", { account_id: "acme" }), { ok: true, account_id: "acme" });
    assert.deepEqual(await ack(s, "conversation:join", { conversation_id: conv }), { ok: true, account_id: "acme", conversation_id: conv });
    const bad = await ack(s, "conversation:join", { conversation_id: "" });
    assert.equal(bad.error, "invalid_payload");
    const st = await ack(s, "agent:status", { status: "away" });
    assert.deepEqual(st, { ok: true, status: "away" });
    assert.deepEqual(await waitFor(s, "agent:presence", (p) => p.status === "away"), { user_id: `u-${name}`, status: "away" });
    const list = await ack(s, "agent:presence:list", { account_id: "acme" });
    assert.ok(list.ok && list.presence.some((p) => p.user_id === `u-${name}` && p.status === "away"), JSON.stringify(list));

    assert.equal((await srv.publish("conversation.created", { account_id: "acme", conversation_id: conv, status: "open" })).status, 202);
    assert.deepEqual(await waitFor(s, "conversation:new", (c) => c.conversation_id === conv), { conversation_id: conv, status: "open" });
    await srv.publish("conversation.message.created", { account_id: "acme", conversation_id: conv, message_id: "m1", message_body: "über ✓ 🚀", is_private: false });
    const m = await waitFor(s, "conversation:message", (x) => x.message_id === "m1");
    assert.equal(m.message_body, "über ✓ 🚀");
    assert.equal(m.is_private, false);

    // A burst of events arrives complete and in order.
    for (let i = 0; i < 50; i++) {
      await srv.publish("conversation.message.created", { account_id: "acme", conversation_id: conv, message_id: `b${i}`, message_body: "x".repeat(i * 20) });
    }
    await waitFor(s, "conversation:message", (x) => x.message_id === "b49", 5000);
    const burst = s.received.filter((e) => e.event === "conversation:message" && e.data.message_id.startsWith("b")).map((e) => e.data.message_id);
    assert.deepEqual(burst, Array.from({ length: 50 }, (_, i) => `b${i}`));
    assert.equal(s.io.engine.transport.name, name, "the transport did not change");
    s.close();
  });
}

test("a websocket agent and a polling agent in one conversation see each other", { timeout: 20000 }, async () => {
  const ws = await connect(srv.url, await srv.token("u-ws", ["acme"]), only.websocket);
  const lp = await connect(srv.url, await srv.token("u-lp", ["acme"]), only.polling);
  for (const s of [ws, lp]) assert.equal((await ack(s, "conversation:join", { conversation_id: "c-mixed" })).ok, true);

  assert.equal((await ack(ws, "conversation:typing:start", { conversation_id: "c-mixed" })).ok, true);
  assert.deepEqual(await waitFor(lp, "conversation:typing"), { conversation_id: "c-mixed", user_id: "u-ws", typing: true });
  assert.equal((await ack(lp, "conversation:typing:start", { conversation_id: "c-mixed" })).ok, true);
  assert.deepEqual(await waitFor(ws, "conversation:typing"), { conversation_id: "c-mixed", user_id: "u-lp", typing: true });
  await ack(lp, "conversation:typing:stop", { conversation_id: "c-mixed" });
  assert.deepEqual(await waitFor(ws, "conversation:typing", (t) => !t.typing), { conversation_id: "c-mixed", user_id: "u-lp", typing: false });

  await srv.publish("conversation.assigned", { account_id: "acme", conversation_id: "c-mixed", assignee_id: "u-lp", assigned_by: "u-ws" });
  assert.deepEqual(await waitFor(lp, "notification:assignment"), { conversation_id: "c-mixed", assigned_by: "u-ws" });
  for (const s of [ws, lp]) assert.equal((await waitFor(s, "conversation:updated")).assignee_id, "u-lp");
  await sleep(100);
  assert.equal(ws.received.filter((e) => e.event === "notification:assignment").length, 0);
  closeAll(ws, lp);
});

test("auth as a callback: every reconnection gets a fresh token", { timeout: 30000 }, async () => {
  // The first token lives 4 s. The transport drops at once; the reconnection
  // asks the callback again and gets a token for an hour, so the connection
  // is still alive after the first token's expiry. A static auth object would
  // have reconnected with the first token and been cut off at expiry.
  const calls = [];
  const socket = io(srv.url + "/agents", {
    transports: ["websocket"],
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 200,
    auth: (cb) => {
      const ttl = calls.length === 0 ? "4s" : "1h";
      calls.push(ttl);
      srv.token("u-refresh", ["acme"], ttl).then((token) => cb({ token }), () => cb({}));
    },
  });
  const events = [];
  socket.onAny((event, data) => events.push({ event, data }));
  const connects = [];
  socket.on("connect", () => connects.push(Date.now()));
  socket.on("connect_error", (err) => events.push({ event: "connect_error", data: err.message }));
  try {
    await waitUntil(() => connects.length === 1, 5000, "first connect");
    assert.equal((await ack(socket, "account:subscribe", { account_id: "acme" })).ok, true);

    socket.io.engine.close(); // the network drops
    await waitUntil(() => connects.length === 2, 5000, "reconnect");
    assert.deepEqual(calls, ["4s", "1h"], "the callback ran once per connection");

    await sleep(4500); // past the first token's expiry
    assert.ok(socket.connected, `still connected; events: ${JSON.stringify(events)}`);
    assert.equal(events.filter((e) => e.event === "auth:expired").length, 0);
    // Recovered or re-subscribed, the account room works.
    if (!socket.recovered) await ack(socket, "account:subscribe", { account_id: "acme" });
    await srv.publish("queue.updated", { account_id: "acme", unassigned_count: 7 });
    await waitUntil(() => events.some((e) => e.event === "queue:update" && e.data.unassigned_count === 7), 3000, "queue:update");
  } finally {
    socket.close();
  }
});

test("websocket origins: same-origin pages and listed origins connect, others are refused", { timeout: 15000 }, async () => {
  const token = await srv.token("u-origin", ["acme"]);
  const same = await connect(srv.url, token, { transports: ["websocket"], extraHeaders: { Origin: srv.url } });
  assert.ok(same.connected);
  const listed = await connect(srv.url, token, { transports: ["websocket"], extraHeaders: { Origin: "http://localhost:3600" } });
  assert.ok(listed.connected);
  closeAll(same, listed);
  await assert.rejects(connect(srv.url, token, { transports: ["websocket"], extraHeaders: { Origin: "http://evil.example" } }));
  await assert.rejects(connect(srv.url, token, { transports: ["polling"], extraHeaders: { Origin: "http://evil.example" } }));
});

async function waitUntil(cond, timeout, what) {
  const deadline = Date.now() + timeout;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
