// The Hub's contract with the official socket.io-client (issue: the realtime Hub).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, connect, waitFor, ack, sleep, closeAll } from "./harness.js";
import { contract, fullEvent } from "./contract.js";

let srv;
before(async () => { srv = await startServer(); });
after(async () => { await srv.stop(); });

test("connect with a valid token; the handshake is refused without one or with a bad one", async () => {
  const s = await connect(srv.url, await srv.token("alice", ["acme"]));
  assert.ok(s.connected);
  s.close();

  await assert.rejects(connect(srv.url, undefined), (err) => {
    assert.equal(err.message, "Authentication required");
    assert.equal(err.data.code, "auth_required");
    return true;
  });
  await assert.rejects(connect(srv.url, "not-a-token"), (err) => {
    assert.equal(err.message, "Invalid token");
    assert.equal(err.data.code, "invalid_token");
    return true;
  });
  await assert.rejects(connect(srv.url, await srv.token("alice", ["acme"], "-5m")), (err) => {
    assert.equal(err.message, "Token expired");
    assert.equal(err.data.code, "token_expired");
    return true;
  });
  // The Authorization header works as well as handshake.auth.
  const h = await connect(srv.url, undefined, { extraHeaders: { Authorization: `Bearer ${await srv.token("alice", ["acme"])}` }, transports: ["polling"] });
  assert.ok(h.connected);
  h.close();
});

test("every route delivers its client event with exactly the listed fields, to exactly its rooms", async () => {
  // inAccount: subscribed to acme only. inConv: joined conv c1 of acme only.
  // assignee: the assignee's user room only. other: the same ids in another account.
  const inAccount = await connect(srv.url, await srv.token("u-account", ["acme"]));
  const inConv = await connect(srv.url, await srv.token("u-conv", ["acme"]));
  const assignee = await connect(srv.url, await srv.token("u-assignee", ["acme"]));
  const other = await connect(srv.url, await srv.token("u-globex", ["globex"]));
  assert.deepEqual(await ack(inAccount, "account:subscribe", { account_id: "acme" }), { ok: true, account_id: "acme" });
  assert.equal((await ack(inConv, "conversation:join", { conversation_id: "c1" })).ok, true);
  assert.equal((await ack(other, "account:subscribe", { account_id: "globex" })).ok, true);
  assert.equal((await ack(other, "conversation:join", { conversation_id: "c1", account_id: "globex" })).ok, true);
  const who = { account: [inAccount], conv: [inConv], user: [assignee], "account+conv": [inAccount, inConv] };
  const all = [inAccount, inConv, assignee, other];

  for (const row of contract) {
    for (const s of all) s.received = [];
    const res = await srv.publish(row.key, fullEvent());
    assert.equal(res.status, 202, `${row.key}: ${JSON.stringify(res.body)}`);
    for (const [event, rooms, fields] of row.emits) {
      for (const s of who[rooms]) {
        const data = await waitFor(s, event);
        assert.deepEqual(Object.keys(data).sort(), fields, `${row.key} -> ${event} fields`);
        if (fields.includes("last_message_at")) assert.equal(data.last_message_at, fullEvent().created_at.slice(0, 10) + data.last_message_at.slice(10));
      }
    }
    await sleep(100);
    const expected = (s) => row.emits.filter(([, rooms]) => who[rooms].includes(s)).length;
    for (const s of all) {
      assert.equal(s.received.length, expected(s), `${row.key}: socket got ${JSON.stringify(s.received)}`);
    }
  }
  assert.equal(other.received.length, 0);
  closeAll(...all);
});

test("a socket in two target rooms of one emit receives it once", async () => {
  const s = await connect(srv.url, await srv.token("u-both", ["acme"]));
  await ack(s, "account:subscribe", { account_id: "acme" });
  await ack(s, "conversation:join", { conversation_id: "c-both" });
  await srv.publish("conversation.status_changed", { account_id: "acme", conversation_id: "c-both", status: "pending" });
  await waitFor(s, "conversation:updated");
  await sleep(150);
  assert.equal(s.received.filter((e) => e.event === "conversation:updated").length, 1);
  s.close();
});

test("subscribing to an account not in the token is forbidden and receives nothing", async () => {
  const s = await connect(srv.url, await srv.token("mallory", ["acme"]));
  const res = await ack(s, "account:subscribe", { account_id: "globex" });
  assert.equal(res.ok, false);
  assert.equal(res.error, "forbidden");
  assert.match(res.message, /globex/);
  const join = await ack(s, "conversation:join", { conversation_id: "c1", account_id: "globex" });
  assert.equal(join.error, "forbidden");
  await srv.publish("conversation.created", { account_id: "globex", conversation_id: "c1", status: "open" });
  await srv.publish("conversation.message.created", { account_id: "globex", conversation_id: "c1", message_body: "secret" });
  await sleep(200);
  assert.deepEqual(s.received, []);
  s.close();
});

test("join and leave a conversation", async () => {
  const s = await connect(srv.url, await srv.token("u-jl", ["acme", "globex"]));
  // With two accounts, account_id is required.
  assert.equal((await ack(s, "conversation:join", { conversation_id: "c-jl" })).error, "invalid_payload");
  assert.deepEqual(await ack(s, "conversation:join", { conversation_id: "c-jl", account_id: "acme" }), { ok: true, account_id: "acme", conversation_id: "c-jl" });
  await srv.publish("conversation.message.created", { account_id: "acme", conversation_id: "c-jl", message_id: "m1", message_body: "one" });
  assert.equal((await waitFor(s, "conversation:message")).message_id, "m1");
  assert.equal((await ack(s, "conversation:leave", { conversation_id: "c-jl", account_id: "acme" })).ok, true);
  s.received = [];
  await srv.publish("conversation.message.created", { account_id: "acme", conversation_id: "c-jl", message_id: "m2", message_body: "two" });
  await sleep(200);
  assert.deepEqual(s.received, []);
  // unsubscribe leaves the account room.
  await ack(s, "account:subscribe", { account_id: "acme" });
  assert.equal((await ack(s, "account:unsubscribe", { account_id: "acme" })).ok, true);
  await srv.publish("queue.updated", { account_id: "acme", unassigned_count: 1 });
  await sleep(200);
  assert.deepEqual(s.received, []);
  s.close();
});

test("typing is relayed to the other agent, not echoed, and not relayed from outside the room", async () => {
  const alice = await connect(srv.url, await srv.token("alice-t", ["acme"]));
  const bob = await connect(srv.url, await srv.token("bob-t", ["acme"]));
  const eve = await connect(srv.url, await srv.token("eve-t", ["acme"]));
  await ack(alice, "conversation:join", { conversation_id: "c-typing" });
  await ack(bob, "conversation:join", { conversation_id: "c-typing" });

  assert.equal((await ack(alice, "conversation:typing:start", { conversation_id: "c-typing" })).ok, true);
  assert.deepEqual(await waitFor(bob, "conversation:typing"), { conversation_id: "c-typing", user_id: "alice-t", typing: true });
  assert.equal((await ack(alice, "conversation:typing:stop", { conversation_id: "c-typing" })).ok, true);
  assert.deepEqual(await waitFor(bob, "conversation:typing", (d) => !d.typing), { conversation_id: "c-typing", user_id: "alice-t", typing: false });

  // eve has not joined: refused, nothing relayed.
  const res = await ack(eve, "conversation:typing:start", { conversation_id: "c-typing" });
  assert.equal(res.error, "forbidden");
  await sleep(200);
  assert.equal(alice.received.filter((e) => e.event === "conversation:typing").length, 0, "typing is never echoed to the sender");
  assert.equal(bob.received.filter((e) => e.event === "conversation:typing" && e.data.user_id === "eve-t").length, 0);
  closeAll(alice, bob, eve);
});

test("invalid payloads get an error acknowledgement and the socket keeps working", async () => {
  const s = await connect(srv.url, await srv.token("u-bad", ["acme"]));
  const long = "x".repeat(10000);
  const bad = [
    ["account:subscribe", "acme"],
    ["account:subscribe", 42],
    ["account:subscribe", null],
    ["account:subscribe", ["acme"]],
    ["account:subscribe", {}],
    ["account:subscribe", { account_id: 7 }],
    ["account:subscribe", { account_id: "" }],
    ["account:subscribe", { account_id: long }],
    ["conversation:join", {}],
    ["conversation:join", { conversation_id: long }],
    ["conversation:join", { conversation_id: "a:b" }],
    ["conversation:typing:start", "c1"],
    ["agent:status", { status: "sleeping" }],
    ["agent:status", 1],
    ["agent:presence:list", {}],
    ["auth:refresh", {}],
  ];
  for (const [event, payload] of bad) {
    const res = await ack(s, event, payload);
    assert.equal(res.ok, false, `${event} ${JSON.stringify(payload)}`);
    assert.equal(res.error, "invalid_payload", `${event} ${JSON.stringify(payload)}: ${JSON.stringify(res)}`);
    assert.equal(typeof res.message, "string");
  }
  // No acknowledgement asked: still no crash.
  s.emit("account:subscribe", "garbage");
  s.emit("conversation:join");
  const ok = await ack(s, "account:subscribe", { account_id: "acme" });
  assert.deepEqual(ok, { ok: true, account_id: "acme" });
  assert.ok(s.connected);
  s.close();
});

test("client events are rate limited per connection", async () => {
  const s = await connect(srv.url, await srv.token("u-flood", ["acme"]));
  const results = await Promise.all(Array.from({ length: 80 }, () => ack(s, "account:subscribe", { account_id: "acme" })));
  const limited = results.filter((r) => r.error === "rate_limited");
  assert.ok(limited.length > 0, "a burst of 80 events must hit the limit");
  assert.ok(results.filter((r) => r.ok).length >= 20, "the burst allowance is served");
  assert.ok(s.connected);
  s.close();
});

test("POST /dev/events rejects an invalid event with 422 and a reason", async () => {
  const res = await srv.publish("conversation.created", { conversation_id: "c1" });
  assert.equal(res.status, 422);
  assert.match(res.body.error, /account_id/);
});
