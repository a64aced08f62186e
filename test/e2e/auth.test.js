// Token lifetime and tenant isolation against a determined client.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, connect, waitFor, ack, sleep, closeAll } from "./harness.js";

let srv;
before(async () => { srv = await startServer(); });
after(async () => { await srv.stop(); });

const disconnected = (s) => new Promise((resolve) => s.once("disconnect", (reason) => resolve({ reason, at: Date.now() })));

test("a client of account A receives nothing of account B, whatever it sends", async () => {
  const a = await connect(srv.url, await srv.token("attacker", ["acct-a"]));
  const b = await connect(srv.url, await srv.token("victim", ["acct-b"]));
  await ack(b, "account:subscribe", { account_id: "acct-b" });
  await ack(b, "conversation:join", { conversation_id: "secret-conv" });

  const attempts = [
    ["account:subscribe", { account_id: "acct-b" }],
    ["conversation:join", { conversation_id: "secret-conv", account_id: "acct-b" }],
    ["conversation:join", { conversation_id: "acct-b:secret-conv" }],
    ["conversation:join", { conversation_id: "secret-conv", account_id: "acct-a:x" }],
    ["conversation:typing:start", { conversation_id: "secret-conv", account_id: "acct-b" }],
    ["agent:presence:list", { account_id: "acct-b" }],
  ];
  for (const [event, payload] of attempts) {
    const res = await ack(a, event, payload);
    assert.equal(res.ok, false, `${event} ${JSON.stringify(payload)} was allowed`);
    assert.ok(["forbidden", "invalid_payload"].includes(res.error), res.error);
  }
  // The same conversation id under A's own account is a different room.
  assert.equal((await ack(a, "conversation:join", { conversation_id: "secret-conv" })).ok, true);
  await ack(a, "conversation:typing:start", { conversation_id: "secret-conv" });

  await srv.publish("conversation.message.created", { account_id: "acct-b", conversation_id: "secret-conv", message_id: "m1", message_body: "card number" });
  await srv.publish("conversation.created", { account_id: "acct-b", conversation_id: "c2" });
  await srv.publish("conversation.assigned", { account_id: "acct-b", conversation_id: "secret-conv", assignee_id: "victim" });
  await waitFor(b, "conversation:message");
  await sleep(200);
  assert.deepEqual(a.received, [], "A received something of B");
  assert.equal(b.received.filter((e) => e.event === "conversation:typing").length, 0, "A's typing reached B");
  closeAll(a, b);
});

test("a token expiring while connected gets the socket disconnected within 2 s of expiry", async () => {
  const token = await srv.token("short-lived", ["acme"], "3s");
  const claims = JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
  const s = await connect(srv.url, token);
  const gone = disconnected(s);
  const { reason, at } = await gone;
  assert.equal(reason, "io server disconnect");
  const late = at - claims.exp * 1000;
  assert.ok(late >= -1000 && late <= 2000, `disconnected ${late} ms after expiry`);
  const notice = s.received.find((e) => e.event === "auth:expired");
  assert.equal(notice?.data.code, "token_expired");
});

test("auth:refresh with a newer token for the same user keeps the socket connected", async () => {
  const s = await connect(srv.url, await srv.token("refresher", ["acme", "globex"], "2s"));
  await ack(s, "account:subscribe", { account_id: "globex" });
  await ack(s, "account:subscribe", { account_id: "acme" });
  // Another user's token is refused and changes nothing.
  const other = await ack(s, "auth:refresh", { token: await srv.token("someone-else", ["acme"], "1h") });
  assert.equal(other.error, "forbidden");
  const bad = await ack(s, "auth:refresh", { token: "garbage" });
  assert.equal(bad.error, "invalid_token");
  // The new token no longer lists globex: that room is left.
  const res = await ack(s, "auth:refresh", { token: await srv.token("refresher", ["acme"], "1h") });
  assert.equal(res.ok, true);
  assert.ok(res.expires_at);
  await sleep(3000);
  assert.ok(s.connected, "refreshed socket was disconnected at the old expiry");
  s.received = [];
  await srv.publish("queue.updated", { account_id: "globex", unassigned_count: 1 });
  await srv.publish("queue.updated", { account_id: "acme", unassigned_count: 2 });
  const got = await waitFor(s, "queue:update");
  assert.equal(got.unassigned_count, 2);
  await sleep(150);
  assert.equal(s.received.length, 1, "the globex room must have been left");
  s.close();
});
