// Horizontal scaling (issue 6): three instances of the real binary sharing the
// real Redis and RabbitMQ, clients spread across them with the official
// socket.io-client. Skipped when the services are unreachable, unless
// REALTIME_REQUIRE_SERVICES=1.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { sleep } from "./harness.js";
import { Issuer, Publisher, Proxy, Redis, fleetNames, requireServices, startInstance, uid } from "./fleet.js";

const skip = await requireServices();

// agent opens an /agents socket that reconnects on its own, as a browser's
// does, and records every event with its offset.
function agent(url, token, opts = {}) {
  const s = io(url + "/agents", {
    auth: { token }, transports: ["websocket"], forceNew: true, timeout: 5000,
    reconnectionDelay: 100, reconnectionDelayMax: 300, randomizationFactor: 0, ...opts,
  });
  s.received = [];
  s.connects = [];
  s.errors = [];
  s.onAny((event, ...args) => {
    const last = args[args.length - 1];
    s.received.push({ event, data: args[0], offset: args.length > 1 && typeof last === "string" ? last : undefined });
  });
  s.on("connect", () => s.connects.push({ at: Date.now(), recovered: s.recovered }));
  s.on("connect_error", (err) => s.errors.push(err));
  return s;
}

async function until(what, cond, timeout = 10000) {
  const deadline = Date.now() + timeout;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const connected = (s, n = 1) => until(`connection ${n}`, () => s.connects.length >= n);
const ack = (s, event, payload) => s.timeout(3000).emitWithAck(event, payload);
const events = (s, name) => s.received.filter((e) => e.event === name).map((e) => e.data);
const seqOf = (d) => Number(d.message_id.split("-")[1]);

// message is a conversation.message.created event numbered seq.
const message = (account, conv, seq) => ({
  account_id: account, conversation_id: conv, message_id: `m-${seq}`, sender_type: "contact",
  message_body: `message ${seq}`, is_private: false, created_at: new Date().toISOString(),
});

describe("three instances", { skip: skip ?? false, timeout: 120000 }, () => {
  let issuer, names, pub, redis;
  let inst = [];
  const sockets = [];
  const open = (...args) => { const s = agent(...args); sockets.push(s); return s; };

  before(async () => {
    issuer = await new Issuer().start();
    names = fleetNames();
    // The first instance to start is the queue's single active consumer.
    inst.push(await startInstance(issuer, names));
    inst.push(...await Promise.all([startInstance(issuer, names), startInstance(issuer, names)]));
    pub = await new Publisher().open(names);
    redis = await new Redis().open();
  });

  after(async () => {
    for (const s of sockets) s.close();
    await Promise.all(inst.map((i) => i.stop()));
    await pub?.cleanup();
    await redis?.deletePrefix(names.prefix);
    redis?.close();
    issuer?.close();
  });

  test("every event reaches every subscribed client once, in order per conversation; other accounts get nothing", async () => {
    const acct = "acct-" + uid();
    const convs = ["c1", "c2", "c3"];
    const clients = [];
    for (let i = 0; i < 12; i++) {
      const s = open(inst[i % 3].url, issuer.token(`agent-${i}-${uid()}`, [acct]));
      await connected(s);
      assert.equal((await ack(s, "account:subscribe", { account_id: acct })).ok, true);
      assert.equal((await ack(s, "conversation:join", { conversation_id: convs[i % 3] })).ok, true);
      clients.push(s);
    }
    const outsider = open(inst[1].url, issuer.token("outsider-" + uid(), ["other-" + uid()]));
    await connected(outsider);

    const per = 100;
    for (let n = 0; n < per; n++) for (const c of convs) pub.publish("conversation.message.created", message(acct, c, n));
    await pub.confirmed();

    for (const [i, s] of clients.entries()) {
      await until(`client ${i}: every event`, () => events(s, "conversation:updated").length >= per * convs.length
        && events(s, "conversation:message").length >= per);
    }
    await sleep(300); // room for duplicates to show up
    for (const [i, s] of clients.entries()) {
      const updates = events(s, "conversation:updated");
      assert.equal(updates.length, per * convs.length, `client ${i} (instance ${i % 3}): account events once each`);
      const msgs = events(s, "conversation:message");
      assert.equal(msgs.length, per, `client ${i}: messages of its conversation once each`);
      assert.ok(msgs.every((m) => m.conversation_id === convs[i % 3]), `client ${i}: only its conversation`);
      assert.deepEqual(msgs.map(seqOf), [...Array(per).keys()], `client ${i}: conversation order`);
      for (const c of convs) {
        const order = updates.filter((u) => u.conversation_id === c).map((u) => u.last_message_at);
        assert.equal(order.length, per);
      }
    }
    assert.deepEqual(outsider.received, [], "a client of another account received events");
  });

  test("typing and presence cross instances", async () => {
    const acct = "acct-" + uid();
    const [x, y, z] = ["x", "y", "z"].map((n) => n + "-" + uid());
    const sx = open(inst[0].url, issuer.token(x, [acct]));
    const sy = open(inst[1].url, issuer.token(y, [acct]));
    const sz = open(inst[2].url, issuer.token(z, [acct]));
    await Promise.all([connected(sx), connected(sy), connected(sz)]);
    for (const s of [sx, sy, sz]) assert.equal((await ack(s, "account:subscribe", { account_id: acct })).ok, true);
    for (const s of [sx, sy]) assert.equal((await ack(s, "conversation:join", { conversation_id: "t1" })).ok, true);

    assert.equal((await ack(sx, "conversation:typing:start", { conversation_id: "t1" })).ok, true);
    await until("typing on another instance", () => events(sy, "conversation:typing").some((d) => d.user_id === x && d.typing === true));
    assert.equal(events(sx, "conversation:typing").length, 0, "the typist got its own typing");
    assert.equal(events(sz, "conversation:typing").length, 0, "typing reached a client outside the conversation");
    assert.equal((await ack(sx, "conversation:typing:stop", { conversation_id: "t1" })).ok, true);
    await until("typing stop on another instance", () => events(sy, "conversation:typing").some((d) => d.user_id === x && d.typing === false));

    assert.equal((await ack(sx, "agent:status", { status: "away" })).ok, true);
    for (const s of [sy, sz]) await until("presence on other instances", () => events(s, "agent:presence").some((d) => d.user_id === x && d.status === "away"));
    const list = await ack(sz, "agent:presence:list", { account_id: acct });
    assert.deepEqual(list.presence.filter((p) => [x, y, z].includes(p.user_id)).map((p) => [p.user_id, p.status]).sort(),
      [[x, "away"], [y, "online"], [z, "online"]].sort(), "presence list read on a third instance");

    sx.close(); // x's only connection: offline for everyone
    await until("offline on other instances", () => events(sy, "agent:presence").some((d) => d.user_id === x && d.status === "offline"));
  });

  test("a client cut off for 5 s while 100 events are published gets all of them on another instance, in order, once", async () => {
    const acct = "acct-" + uid();
    const lb = await new Proxy([inst[1].url]).start();
    try {
      const s = open(lb.url, issuer.token("mover-" + uid(), [acct]));
      await connected(s);
      await ack(s, "account:subscribe", { account_id: acct });
      await ack(s, "conversation:join", { conversation_id: "r1" });
      for (let n = 0; n < 5; n++) pub.publish("conversation.message.created", message(acct, "r1", n));
      await until("first events", () => events(s, "conversation:message").length === 5);

      lb.pause(true);
      lb.cut();
      await until("the client to notice", () => !s.connected);
      const cutAt = Date.now();
      for (let n = 5; n < 105; n++) pub.publish("conversation.message.created", message(acct, "r1", n));
      await pub.confirmed();
      await sleep(5000 - (Date.now() - cutAt));
      lb.use(inst[2].url); // the balancer sends it elsewhere
      lb.pause(false);
      await connected(s, 2);
      assert.equal(s.recovered, true, "socket.recovered after the reconnect");
      await until("the missed events", () => events(s, "conversation:message").length >= 105);
      pub.publish("conversation.message.created", message(acct, "r1", 105));
      await until("a new event after recovery", () => events(s, "conversation:message").length >= 106);
      await sleep(200);
      assert.deepEqual(events(s, "conversation:message").map(seqOf), [...Array(106).keys()], "in order, once");
      assert.equal(events(s, "conversation:updated").length, 106, "the account room came back too");
    } finally {
      lb.close();
    }
  });

  test("an expired token is refused on recovery and sent nothing; a fresh one recovers", async () => {
    const acct = "acct-" + uid();
    const user = "expiring-" + uid();
    const lb = await new Proxy([inst[0].url]).start();
    try {
      const s = open(lb.url, issuer.token(user, [acct]));
      await connected(s);
      await ack(s, "account:subscribe", { account_id: acct });
      pub.publish("conversation.created", { account_id: acct, conversation_id: "n0" });
      await until("first event", () => events(s, "conversation:new").length === 1);

      lb.pause(true);
      lb.cut();
      await until("the client to notice", () => !s.connected);
      for (let n = 1; n <= 20; n++) pub.publish("conversation.created", { account_id: acct, conversation_id: `n${n}` });
      await pub.confirmed();
      let eventPackets = 0;
      s.io.on("packet", (p) => { if (p.type === 2 && p.nsp === "/agents") eventPackets++; });
      s.auth.token = issuer.token(user, [acct], -60); // expired while away
      lb.use(inst[1].url);
      lb.pause(false);
      await until("the refusal", () => s.errors.some((e) => e.message === "Token expired"));
      s.disconnect(); // stop retrying with the expired token
      await sleep(300);
      assert.equal(eventPackets, 0, "events were sent before the token was checked");
      assert.equal(events(s, "conversation:new").length, 1);

      s.auth.token = issuer.token(user, [acct]); // refreshed
      s.connect();
      await connected(s, 2);
      assert.equal(s.recovered, true, "recovered with the refreshed token");
      await until("the missed events", () => events(s, "conversation:new").length === 21);
    } finally {
      lb.close();
    }
  });

  test("a session recovered with another user's token keeps none of the first user's rooms", async () => {
    const acct = "acct-" + uid();
    const [a, b] = ["first-" + uid(), "second-" + uid()];
    const lb = await new Proxy([inst[0].url]).start();
    try {
      const s = open(lb.url, issuer.token(a, [acct]));
      await connected(s);
      await ack(s, "account:subscribe", { account_id: acct });
      pub.publish("conversation.created", { account_id: acct, conversation_id: "u0" });
      await until("first event", () => events(s, "conversation:new").length === 1);
      lb.pause(true);
      lb.cut();
      await until("the client to notice", () => !s.connected);
      pub.publish("conversation.assigned", { account_id: acct, conversation_id: "u1", assignee_id: a, assigned_by: "lead" });
      await pub.confirmed();
      s.auth.token = issuer.token(b, [acct]); // another user signs in on the same page
      lb.use(inst[1].url);
      lb.pause(false);
      await connected(s, 2);
      pub.publish("conversation.assigned", { account_id: acct, conversation_id: "u2", assignee_id: a, assigned_by: "lead" });
      pub.publish("conversation.assigned", { account_id: acct, conversation_id: "u3", assignee_id: b, assigned_by: "lead" });
      await until("the second user's notification", () => events(s, "notification:assignment").some((d) => d.conversation_id === "u3"));
      await sleep(200);
      assert.deepEqual(events(s, "notification:assignment").map((d) => d.conversation_id), ["u3"],
        "the second user received the first user's notifications");
    } finally {
      lb.close();
    }
  });

  test("instance loss: SIGKILL mid-stream; its clients reconnect to the others and miss nothing published after; unacked events are redelivered", async (t) => {
    const acct = "acct-" + uid();
    // One balancer per instance, falling back to the others: a client stays
    // where it is until its instance dies.
    const lbs = await Promise.all(inst.map((_, i) => new Proxy([inst[i].url, inst[(i + 1) % 3].url, inst[(i + 2) % 3].url]).start()));
    try {
      const clients = [];
      for (let i = 0; i < 9; i++) {
        const s = open(lbs[i % 3].url, issuer.token(`agent-${i}-${uid()}`, [acct]));
        // A client that was not recovered subscribes again (and would refetch).
        s.on("connect", async () => {
          if (s.recovered) return;
          await ack(s, "account:subscribe", { account_id: acct });
          s.subscribedAt = Date.now();
        });
        await until(`client ${i} subscribed`, () => s.subscribedAt);
        s.home = i % 3;
        clients.push(s);
      }
      // The consumer is instance 0: kill it with events prefetched, unacked.
      const total = 3000;
      const sentAt = [];
      const seen = (c) => new Set(events(c, "conversation:new").map((d) => Number(d.conversation_id.slice(1))));
      let held = 0;
      for (let n = 0; n < total; n++) {
        sentAt.push(Date.now());
        pub.publish("conversation.created", { account_id: acct, conversation_id: `k${n}` });
        if (n === 1500) {
          await until("the stream to be under way", () => clients[1].received.length > 200);
          await pub.confirmed();
          const ready = await pub.queueDepth();
          const delivered = Math.max(...clients.filter((c) => c.home !== 0).map((c) => seen(c).size));
          held = n + 1 - ready - delivered; // taken by instance 0 and not yet delivered: unacked
          inst[0].proc.kill("SIGKILL");
        }
        if (n % 200 === 0) await sleep(5);
      }
      await pub.confirmed();
      const victims = clients.filter((c) => c.home === 0);
      for (const c of victims) await connected(c, 2);
      for (const c of victims) assert.equal(c.connects[1].recovered, false, "a killed instance's client cannot be recovered");
      // Every client gets what was published after it (re)subscribed: a
      // client of the killed instance cannot be recovered, and with a fast
      // consumer the rest may all be published (and delivered) before it
      // is back.
      const owed = (c) => [...Array(total).keys()].filter((n) => sentAt[n] > (c.home === 0 ? c.subscribedAt : 0));
      for (const [i, c] of clients.entries()) {
        await until(`client ${i}: every event published after it subscribed`, () => {
          const got = seen(c);
          return owed(c).every((n) => got.has(n));
        }, 30000);
      }
      await sleep(500);
      for (const [i, c] of clients.entries()) {
        const got = seen(c);
        const since = c.home === 0 ? c.subscribedAt : 0;
        const missed = [...Array(total).keys()].filter((n) => sentAt[n] > since && !got.has(n));
        assert.deepEqual(missed, [], `client ${i} (instance ${c.home}) missed events published after it (re)connected`);
        if (c.home !== 0) assert.equal(got.size, total, `client ${i} of a surviving instance missed events`);
      }
      // Instance 0 held events it had not acknowledged when it died; the
      // survivors received every event, so the broker redelivered them to the
      // new active consumer.
      // (A consumer faster than the publisher may hold none, so held is
      // reported below, not asserted: the survivors' complete sets above
      // are the check.)
      assert.equal(await pub.queueDepth(), 0, "events left in the queue");
      const dups = events(clients[1], "conversation:new").length - total;
      assert.ok(dups >= 0 && dups <= 256, `${dups} duplicates: events emitted but not acknowledged by instance 0 (at most the prefetch)`);
      t.diagnostic(`instance 0 held ${held} unacknowledged events when killed; ${dups} were emitted twice`);
    } finally {
      for (const lb of lbs) lb.close();
    }
  });
});

describe("a short recovery window", { skip: skip ?? false, timeout: 60000 }, () => {
  let issuer, names, pub, redis;
  let inst = [];

  before(async () => {
    issuer = await new Issuer().start();
    names = fleetNames();
    inst.push(await startInstance(issuer, names, { RECOVERY_WINDOW: "1s" }));
    inst.push(await startInstance(issuer, names, { RECOVERY_WINDOW: "1s" }));
    pub = await new Publisher().open(names);
    redis = await new Redis().open();
  });

  after(async () => {
    await Promise.all(inst.map((i) => i.stop()));
    await pub?.cleanup();
    await redis?.deletePrefix(names.prefix);
    redis?.close();
    issuer?.close();
  });

  test("a client away longer than the window reconnects cleanly and is told it was not recovered", async () => {
    const acct = "acct-" + uid();
    const lb = await new Proxy([inst[0].url]).start();
    const s = agent(lb.url, issuer.token("away-" + uid(), [acct]));
    try {
      await connected(s);
      await ack(s, "account:subscribe", { account_id: acct });
      pub.publish("conversation.created", { account_id: acct, conversation_id: "w0" });
      await until("first event", () => events(s, "conversation:new").length === 1);
      lb.pause(true);
      lb.cut();
      pub.publish("conversation.created", { account_id: acct, conversation_id: "w1" });
      await sleep(2000);
      lb.use(inst[1].url);
      lb.pause(false);
      await connected(s, 2);
      assert.equal(s.recovered, false, "socket.recovered must be false: the client refetches");
      assert.equal(events(s, "conversation:new").length, 1, "the missed event was replayed without recovery");
      // A fresh session that works: subscribe again and receive.
      assert.equal((await ack(s, "account:subscribe", { account_id: acct })).ok, true);
      pub.publish("conversation.created", { account_id: acct, conversation_id: "w2" });
      await until("a new event", () => events(s, "conversation:new").some((d) => d.conversation_id === "w2"));
    } finally {
      s.close();
      lb.close();
    }
  });
});
