// The websocket hot path, end to end: per-socket order and exactly-once
// delivery across the websocket, polling and mid-upgrade paths, fan-out to
// many sockets, connection state recovery on websocket, a stalled reader cut
// off without delaying the others, and the metrics that tell which path
// served. Written against behaviour, so they hold for the library's path and
// for the fast path alike; the stalled-reader and metrics tests need
// WRITE_QUEUE_LIMIT, WRITE_TIMEOUT, realtime_slow_clients_disconnected_total
// and realtime_deliveries_total{path} (commit 438d4e8 on).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import net from "node:net";
import { io, NodeXHR, NodeWebSocket } from "socket.io-client";
import { startServer, ack, sleep } from "./harness.js";

const WS = { transports: ["websocket"] };
const DEFAULT = { transports: ["polling", "websocket"] }; // socket.io-client's default: polling, then an upgrade
const POLLING = { transports: ["polling"], upgrade: false };
const range = (n) => Array.from({ length: n }, (_, i) => i);

let srv;
before(async () => { srv = await startServer(); });
after(async () => { await srv?.stop(); });

// agent connects an /agents socket like the harness's connect (no automatic
// reconnection, 15 ms after connect for the library's registration race) and
// logs every event with the transport it arrived on and when. hooks.onUpgrade
// runs with the socket when the client switches to websocket.
async function agent(server, user, accounts, opts = {}, hooks = {}) {
  const token = await server.token(user, accounts);
  const s = io(server.url + "/agents", {
    auth: { token }, transports: ["websocket"], reconnection: false, forceNew: true, timeout: 5000, ...opts,
  });
  s.user = user;
  s.log = [];
  s.disconnects = [];
  s.onAny((event, ...args) => s.log.push({ event, data: args[0], transport: s.io.engine.transport.name, at: Date.now() }));
  s.on("disconnect", (reason) => s.disconnects.push(reason));
  if (hooks.onUpgrade) s.io.engine.on("upgrade", () => hooks.onUpgrade(s));
  await new Promise((resolve, reject) => {
    s.once("connect", () => setTimeout(resolve, 15));
    s.once("connect_error", (err) => { s.close(); reject(err); });
  });
  return s;
}

// act emits a client event and logs its acknowledgement in the socket's log,
// in the order the client processed it among the server's events.
function act(s, event, payload) {
  return new Promise((resolve, reject) => {
    s.timeout(15000).emit(event, payload, (err, res) => {
      if (err) return reject(new Error(`${s.user} ${event}: no acknowledgement (${err.message})`));
      s.log.push({ event: "ack", ack: event, data: res, transport: s.io.engine.transport.name, at: Date.now() });
      resolve({ res, index: s.log.length - 1 });
    });
  });
}

// until waits for cond (which may return a promise) to hold.
async function until(what, cond, timeout = 10000) {
  const deadline = Date.now() + timeout;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(5);
  }
}

// publish POSTs one event to /dev/events; it answers 202 once the Hub has
// handed the emits over, so publishes awaited one after another are ordered.
async function publish(server, routingKey, event) {
  const r = await fetch(server.url + "/dev/events", {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ routing_key: routingKey, event }), signal: AbortSignal.timeout(10000),
  });
  const body = await r.text();
  if (r.status !== 202) throw new Error(`publish ${routingKey}: ${r.status} ${body}`);
}

// metric sums the samples of a Prometheus metric whose labels include
// labels; null when there is no such sample.
async function metric(server, name, labels = {}) {
  const text = await (await fetch(server.url + "/metrics", { signal: AbortSignal.timeout(5000) })).text();
  let sum = null;
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum = (sum ?? 0) + Number(m[3]);
  }
  return sum;
}

const messages = (s, from = 0) => s.log.slice(from).filter((e) => e.event === "conversation:message");
const hasMessage = (s, id) => s.log.some((e) => e.event === "conversation:message" && e.data.message_id === id);

// gatedWebSocket is the client's websocket transport with two gates, so an
// upgrade happens at a chosen point: the probe connection opens only after
// gate.open(), and the upgrade packet ("5") is held after the probe succeeded
// (the client has paused polling; the server has the socket mid-upgrade)
// until gate.upgrade().
function gatedWebSocket() {
  let releaseOpen, releaseUpgrade;
  const opened = new Promise((r) => { releaseOpen = r; });
  const upgraded = new Promise((r) => { releaseUpgrade = r; });
  const gate = { open: () => releaseOpen(), upgrade: () => releaseUpgrade(), probing: false, upgradeHeld: false, wsMessages: 0 };
  class GatedWebSocket extends NodeWebSocket {
    doOpen() {
      opened.then(() => {
        if (this.readyState !== "opening") return;
        gate.probing = true;
        super.doOpen();
      });
    }
    write(packets) {
      if (!packets.some((p) => p.type === "upgrade")) return super.write(packets);
      gate.upgradeHeld = true;
      this.writable = false; // the client buffers its emits until the drain after the real write
      upgraded.then(() => super.write(packets));
    }
    onPacket(packet) {
      if (packet.type === "message") gate.wsMessages++;
      super.onPacket(packet);
    }
  }
  return { gate, transports: [NodeXHR, GatedWebSocket] };
}

test("per socket: every message once, in publish order, with acks and other emits, over websocket, polling and an upgrade mid-burst", { timeout: 90000 }, async (t) => {
  const acct = "fp-order";
  const conv = "c-order";
  const gated = gatedWebSocket();
  const c = {};
  const all = []; // in the account and the conversation
  let late;
  let published = 0; // messages accepted (202) so far
  try {
    // ws: websocket only; lp: polling only; up: starts polling and upgrades
    // when the test opens its gates; typist: types into the conversation.
    for (const [name, opts] of [["ws", WS], ["lp", POLLING], ["up", { transports: gated.transports }], ["typist", WS]]) {
      const s = await agent(srv, `u-${name}`, [acct], opts, { onUpgrade: (s) => { s.upgradedAfter = published; } });
      // Its connect's presence has reached everyone before it: after the
      // setup no presence broadcast is in flight.
      for (const prev of all) {
        await until(`${prev.user}: ${s.user} online`, () => prev.log.some((e) => e.event === "agent:presence" && e.data.user_id === s.user && e.data.status === "online"));
      }
      assert.deepEqual(await ack(s, "account:subscribe", { account_id: acct }), { ok: true, account_id: acct });
      assert.deepEqual(await ack(s, "conversation:join", { conversation_id: conv }), { ok: true, account_id: acct, conversation_id: conv });
      c[name] = s;
      all.push(s);
    }
    assert.equal(c.ws.io.engine.transport.name, "websocket");
    assert.equal(c.lp.io.engine.transport.name, "polling");
    assert.equal(c.up.io.engine.transport.name, "polling", "the default client has not upgraded before the burst");
    const mark = new Map(all.map((s) => [s, s.log.length]));

    const N = 300;
    const base = Date.parse("2026-11-27T10:00:00.000Z");
    const message = (n, id = `m-${n}`) => ({
      account_id: acct, conversation_id: conv, message_id: id, sender_type: "contact",
      message_body: `message ${n}`, is_private: false, created_at: new Date(base + n).toISOString(),
    });

    // Client actions during the burst: agent:status (ws, lp, up: away,
    // online, away, online) and typing (typist: start, stop, start, stop),
    // one every 18 messages. Each client's actions run one after another;
    // `after` is how many messages had been accepted when it was emitted.
    const actions = [];
    const chains = new Map();
    const nextStatus = { ws: "away", lp: "away", up: "away" };
    let typing = false;
    const schedule = (who) => {
      const s = c[who];
      let a;
      if (who === "typist") {
        typing = !typing;
        a = { who, event: typing ? "conversation:typing:start" : "conversation:typing:stop", payload: { conversation_id: conv }, typing };
      } else {
        a = { who, event: "agent:status", payload: { status: nextStatus[who] } };
        nextStatus[who] = nextStatus[who] === "away" ? "online" : "away";
      }
      actions.push(a);
      const p = (chains.get(who) ?? Promise.resolve()).then(async () => {
        a.after = published;
        const { res, index } = await act(s, a.event, a.payload);
        a.res = res;
        a.ackIndex = index;
      });
      p.catch(() => {}); // awaited below
      chains.set(who, p);
    };
    const plan = ["ws", "lp", "up", "typist"];
    const actionAt = new Map(range(16).map((k) => [8 + 18 * k, plan[k % 4]]));

    // u-late: a default client (polling, then websocket) that connects and
    // joins while the burst runs.
    let lateJoin;
    const lateReady = (async () => {
      const s = await agent(srv, "u-late", [acct], DEFAULT, { onUpgrade: (s) => { s.upgradedAfter = published; } });
      late = s;
      const before = published;
      assert.deepEqual(await ack(s, "conversation:join", { conversation_id: conv }), { ok: true, account_id: acct, conversation_id: conv });
      lateJoin = { before, after: published };
    })();
    lateReady.catch(() => {});

    for (let n = 0; n < N; n++) {
      if (n === 30) {
        await until("m-0 at the default client, over polling", () => hasMessage(c.up, "m-0"));
        gated.gate.open(); // the default client probes websocket now
      }
      if (n === 150) await until("the default client to hold its upgrade packet (the server has it mid-upgrade)", () => gated.gate.upgradeHeld);
      if (n === 190) gated.gate.upgrade();
      if (n === 240) {
        await until("the default client's first frames over websocket", () => gated.gate.wsMessages > 0);
        await until("u-late to join and upgrade", () => lateJoin && late.io.engine.transport.name === "websocket");
      }
      if (actionAt.has(n)) schedule(actionAt.get(n));
      await publish(srv, "conversation.message.created", message(n));
      published = n + 1;
    }
    await Promise.all(chains.values());
    await lateReady;
    // The sentinel: anything sent twice would have arrived before it.
    await publish(srv, "conversation.message.created", message(N, "end"));
    for (const s of [...all, late]) {
      await until(`${s.user}: the sentinel`, () => hasMessage(s, "end") &&
        (s === late || s.log.some((e) => e.event === "conversation:updated" && Date.parse(e.data.last_message_at) === base + N)), 15000);
    }

    const expected = [...range(N).map((n) => `m-${n}`), "end"];
    for (const s of all) {
      const from = mark.get(s);
      const log = s.log.slice(from);
      assert.deepEqual(log.filter((e) => e.event === "conversation:message").map((e) => e.data.message_id), expected,
        `${s.user}: every message once, in publish order`);
      assert.deepEqual(log.filter((e) => e.event === "conversation:updated").map((e) => Date.parse(e.data.last_message_at) - base), range(N + 1),
        `${s.user}: every account update once, in publish order`);
      // Where message n sits in the socket's log.
      const pos = new Map();
      s.log.forEach((e, i) => { if (i >= from && e.event === "conversation:message") pos.set(e.data.message_id, i); });
      const afterMessage = (a) => (a.after === 0 ? from : pos.get(`m-${a.after - 1}`));

      // Presence: each agent:status change once, in order, after the
      // messages accepted before it was asked for (and, on the asking
      // socket, before its ack); u-late's connect once; nothing else.
      const presence = s.log.map((e, i) => ({ ...e, i })).filter((e) => e.i >= from && e.event === "agent:presence");
      for (const who of ["ws", "lp", "up"]) {
        const mine = actions.filter((a) => a.who === who);
        const seen = presence.filter((e) => e.data.user_id === c[who].user);
        assert.deepEqual(seen.map((e) => e.data.status), mine.map((a) => a.payload.status), `${s.user}: presence of ${c[who].user}`);
        mine.forEach((a, k) => {
          assert.ok(seen[k].i > afterMessage(a), `${s.user}: presence ${k} of ${c[who].user} (asked after m-${a.after - 1}) arrived before that message`);
          if (s === c[who]) assert.ok(seen[k].i < a.ackIndex, `${s.user}: its ack ${k} arrived before its own presence broadcast`);
        });
      }
      assert.deepEqual(presence.filter((e) => e.data.user_id === "u-late").map((e) => e.data.status), ["online"], `${s.user}: u-late's connect`);
      assert.equal(presence.length, 12 + 1, `${s.user}: no other presence: ${JSON.stringify(presence.map((e) => e.data))}`);

      // Typing: each change once, in order, after the messages accepted
      // before it; never echoed to the typist.
      const typingSeen = s.log.map((e, i) => ({ ...e, i })).filter((e) => e.i >= from && e.event === "conversation:typing");
      if (s === c.typist) {
        assert.deepEqual(typingSeen, [], "typing is not echoed to the typist");
      } else {
        const mine = actions.filter((a) => a.who === "typist");
        assert.deepEqual(typingSeen.map((e) => e.data), mine.map((a) => ({ conversation_id: conv, user_id: "u-typist", typing: a.typing })), `${s.user}: typing`);
        mine.forEach((a, k) => assert.ok(typingSeen[k].i > afterMessage(a), `${s.user}: typing ${k} (asked after m-${a.after - 1}) arrived before that message`));
      }

      // Its own acks: each once, answered, after the messages accepted
      // before it was asked.
      const mine = actions.filter((a) => c[a.who] === s);
      assert.equal(mine.length, 4);
      assert.equal(log.filter((e) => e.event === "ack").length, mine.length, `${s.user}: acks`);
      for (const a of mine) {
        const want = a.event === "agent:status" ? { ok: true, status: a.payload.status } : { ok: true, account_id: acct, conversation_id: conv };
        assert.deepEqual(a.res, want, `${s.user} ${a.event}`);
        assert.ok(a.ackIndex > afterMessage(a), `${s.user}: the ack of ${a.event} (asked after m-${a.after - 1}) arrived before that message`);
      }
      assert.deepEqual(s.disconnects, [], `${s.user} stayed connected`);
    }

    // Transports: ws and lp never changed; up switched once, mid-burst, and
    // its messages came over polling first, then websocket.
    for (const [s, name] of [[c.ws, "websocket"], [c.typist, "websocket"], [c.lp, "polling"]]) {
      assert.equal(s.io.engine.transport.name, name);
      assert.ok(s.log.every((e) => e.transport === name), `${s.user}: every event over ${name}`);
      assert.equal(s.upgradedAfter, undefined);
    }
    assert.equal(c.up.io.engine.transport.name, "websocket", "the default client upgraded");
    assert.ok(c.up.upgradedAfter >= 30 && c.up.upgradedAfter <= 150, `upgraded after ${c.up.upgradedAfter} messages`);
    const upTransports = messages(c.up, mark.get(c.up)).map((e) => e.transport);
    const switchAt = upTransports.indexOf("websocket");
    assert.ok(switchAt > 0 && switchAt <= 150, `first message over websocket: m-${switchAt}`);
    assert.ok(upTransports.slice(switchAt).every((x) => x === "websocket"), "after the upgrade every message came over websocket");

    // u-late: joined mid-burst; from the message after its join on, every
    // message once and in order; upgraded during the burst.
    const lateIds = messages(late).map((e) => e.data.message_id);
    const first = lateIds.length > 1 ? Number(lateIds[0].slice(2)) : N;
    assert.deepEqual(lateIds, [...range(N - first).map((i) => `m-${first + i}`), "end"], "u-late: a contiguous run, once each, in order");
    assert.ok(first >= lateJoin.before && first <= lateJoin.after + 1,
      `u-late's first message m-${first}; joined after m-${lateJoin.before - 1}, acknowledged by m-${lateJoin.after - 1}`);
    assert.equal(late.io.engine.transport.name, "websocket");
    assert.ok(late.upgradedAfter <= 240, `u-late upgraded after ${late.upgradedAfter} messages`);
    assert.deepEqual(late.disconnects, []);
    t.diagnostic(`up: upgrade began after m-${c.up.upgradedAfter - 1}, first websocket frame m-${switchAt}; u-late joined at m-${first}, upgraded after ${late.upgradedAfter}`);
  } finally {
    for (const s of [...all, late]) s?.close();
  }
});

test("200 events to 50 websocket and 10 polling sockets in one account room: each once, in order", { timeout: 120000 }, async () => {
  const acct = "fp-many";
  const clients = [];
  try {
    const specs = [...Array(50).fill(WS), ...Array(10).fill(POLLING)];
    for (let i = 0; i < specs.length; i += 10) {
      clients.push(...await Promise.all(specs.slice(i, i + 10).map((o, j) => agent(srv, `u-many-${i + j}`, [acct], o))));
    }
    await Promise.all(clients.map(async (s) => assert.deepEqual(await ack(s, "account:subscribe", { account_id: acct }), { ok: true, account_id: acct })));
    const M = 200;
    for (let n = 0; n < M; n++) await publish(srv, "conversation.created", { account_id: acct, conversation_id: `n-${n}`, status: "open" });
    await publish(srv, "conversation.created", { account_id: acct, conversation_id: "end", status: "open" });
    for (const s of clients) {
      await until(`${s.user}: the sentinel`, () => s.log.some((e) => e.event === "conversation:new" && e.data.conversation_id === "end"), 20000);
    }
    const expected = [...range(M).map((n) => `n-${n}`), "end"];
    for (const [i, s] of clients.entries()) {
      const name = i < 50 ? "websocket" : "polling";
      const got = s.log.filter((e) => e.event === "conversation:new");
      assert.deepEqual(got.map((e) => e.data.conversation_id), expected, `${s.user} (${name}): each once, in order`);
      assert.ok(got.every((e) => e.data.status === "open"));
      assert.equal(s.io.engine.transport.name, name);
      assert.deepEqual(s.disconnects, [], `${s.user} stayed connected`);
    }
  } finally {
    for (const s of clients) s.close();
  }
});

test("connection state recovery on websocket: a cut connection gets the missed events once, in order, then new ones", { timeout: 30000 }, async () => {
  const acct = "fp-recover";
  const conv = "c-recover";
  const msg = (n, id = `m-${n}`) => ({ account_id: acct, conversation_id: conv, message_id: id, message_body: `message ${n}`, created_at: new Date(Date.UTC(2026, 10, 27, 10) + n).toISOString() });
  const watcher = await agent(srv, "u-watcher", [acct], WS);
  const s = await agent(srv, "u-recover", [acct], WS);
  try {
    assert.equal((await ack(watcher, "account:subscribe", { account_id: acct })).ok, true);
    assert.deepEqual(await ack(s, "account:subscribe", { account_id: acct }), { ok: true, account_id: acct });
    assert.deepEqual(await ack(s, "conversation:join", { conversation_id: conv }), { ok: true, account_id: acct, conversation_id: conv });
    for (let n = 0; n < 5; n++) await publish(srv, "conversation.message.created", msg(n));
    await until("the first messages", () => hasMessage(s, "m-4"));
    const sid = s.id;

    // The network drops: the TCP connection goes without a websocket close.
    const tcp = s.io.engine.transport.ws?._socket;
    assert.ok(tcp instanceof net.Socket, "the websocket's TCP socket");
    tcp.destroy();
    // Published before the server can have noticed: written to a dead socket.
    for (let n = 5; n < 10; n++) await publish(srv, "conversation.message.created", msg(n));
    await until("the client to notice", () => !s.connected);
    await until("the server to notice (u-recover offline at the watcher)", () => watcher.log.some((e) => e.event === "agent:presence" && e.data.user_id === "u-recover" && e.data.status === "offline"));
    for (let n = 10; n < 30; n++) await publish(srv, "conversation.message.created", msg(n));

    s.connect();
    await until("the reconnection", () => s.connected);
    assert.equal(s.recovered, true, "socket.recovered");
    assert.equal(s.id, sid, "the same session id");
    await until("the missed messages", () => hasMessage(s, "m-29"));
    for (let n = 30; n < 35; n++) await publish(srv, "conversation.message.created", msg(n));
    await publish(srv, "conversation.message.created", msg(35, "end"));
    await until("the new messages", () => hasMessage(s, "end"));
    await until("the account room's sentinel", () => s.log.filter((e) => e.event === "conversation:updated").length >= 36);

    assert.deepEqual(messages(s).map((e) => e.data.message_id), [...range(35).map((n) => `m-${n}`), "end"], "every message once, in order, across the cut");
    assert.deepEqual(s.log.filter((e) => e.event === "conversation:updated").map((e) => e.data.last_message_at), range(36).map((n) => msg(n).created_at),
      "the account room's updates once, in order, across the cut");
    assert.equal(s.disconnects.length, 1, `one disconnect: ${s.disconnects}`);
    assert.ok(messages(s).every((e) => e.transport === "websocket"));
    // The watcher saw it go and come back.
    const seen = () => watcher.log.filter((e) => e.event === "agent:presence" && e.data.user_id === "u-recover").map((e) => e.data.status);
    await until("u-recover online again at the watcher", () => seen().at(-1) === "online");
    assert.deepEqual(seen(), ["offline", "online"]);
  } finally {
    s.close();
    watcher.close();
  }
});

// rawWebSocket is a websocket client on a plain TCP socket, so the test can
// stop reading (socket.pause()) the way a stalled browser does.
class RawWebSocket {
  static open(port) {
    return new Promise((resolve, reject) => {
      const sock = net.connect(port, "127.0.0.1");
      const key = crypto.randomBytes(16).toString("base64");
      let buf = Buffer.alloc(0);
      const fail = (err) => { sock.destroy(); reject(err); };
      sock.once("error", fail);
      sock.once("connect", () => sock.write(`GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
        `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
      const onData = (d) => {
        buf = Buffer.concat([buf, d]);
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        sock.off("data", onData);
        sock.off("error", fail);
        const head = buf.subarray(0, end).toString();
        const accept = crypto.createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
        if (!/^HTTP\/1\.1 101 /.test(head) || !head.toLowerCase().includes(`sec-websocket-accept: ${accept.toLowerCase()}`)) {
          return fail(new Error(`websocket upgrade refused:\n${head}`));
        }
        resolve(new RawWebSocket(sock, buf.subarray(end + 4)));
      };
      sock.on("data", onData);
    });
  }

  constructor(sock, rest) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.messages = [];
    this.answerPings = true;
    this.draining = false;
    this.closed = new Promise((resolve) => {
      let how = "close";
      sock.on("end", () => { how = "end"; });
      sock.on("error", (err) => { how = err.code || err.message; });
      sock.on("close", () => resolve(how));
    });
    sock.on("data", (d) => this.onData(d));
    if (rest.length) this.onData(rest);
  }

  onData(d) {
    if (this.draining) return;
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    for (;;) {
      const b = this.buf;
      if (b.length < 2) return;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) { if (b.length < 4) return; len = b.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (b.length < 10) return; len = Number(b.readBigUInt64BE(2)); off = 10; }
      if (b[1] & 0x80) throw new Error("the server masked a frame");
      if (b.length < off + len) return;
      const op = b[0] & 0x0f;
      const payload = b.subarray(off, off + len);
      this.buf = b.subarray(off + len);
      if (op === 0x9) { this.send(payload, 0xa); continue; }
      if (op === 0x8 || op === 0xa) continue;
      this.partial = op === 0x0 ? Buffer.concat([this.partial, payload]) : payload;
      if (!(b[0] & 0x80)) continue;
      const text = this.partial.toString();
      if (text === "2" && this.answerPings) this.send("3"); // Engine.IO ping -> pong
      this.messages.push(text);
    }
  }

  send(data, opcode = 0x1) {
    const payload = Buffer.isBuffer(data) ? data : Buffer.from(data);
    const mask = crypto.randomBytes(4);
    let head;
    if (payload.length < 126) head = Buffer.from([0x80 | opcode, 0x80 | payload.length]);
    else if (payload.length < 65536) { head = Buffer.from([0x80 | opcode, 0x80 | 126, 0, 0]); head.writeUInt16BE(payload.length, 2); }
    else { head = Buffer.alloc(10); head[0] = 0x80 | opcode; head[1] = 0x80 | 127; head.writeBigUInt64BE(BigInt(payload.length), 2); }
    const masked = Buffer.alloc(payload.length);
    for (let i = 0; i < payload.length; i++) masked[i] = payload[i] ^ mask[i % 4];
    this.sock.write(Buffer.concat([head, mask, masked]));
  }

  async next(pred, what, timeout = 5000) {
    await until(`raw client: ${what} (got ${JSON.stringify(this.messages)})`, () => this.messages.some(pred), timeout);
    const i = this.messages.findIndex(pred);
    return this.messages.splice(i, 1)[0];
  }
}

// With a queue of 64 frames the queue limit usually cuts the client off
// first; with a queue it never fills, the blocked write must.
for (const { queue, reason } of [{ queue: "64" }, { queue: "1000000", reason: "write timeout" }]) {
  test(`a client that stops reading is cut off (WRITE_QUEUE_LIMIT=${queue}, WRITE_TIMEOUT=2s${reason ? `: by the ${reason}` : ""}) without delaying the others`, { timeout: 90000 }, async (t) => {
    const server = await startServer({ env: { WRITE_QUEUE_LIMIT: queue, WRITE_TIMEOUT: "2s" } });
    const acct = "fp-stall";
    const conv = "c-stall";
    const normal = [];
    let raw;
    try {
      // The stalled client: a websocket on a plain TCP socket, joined to the
      // conversation, answering pings until it stops reading.
      raw = await RawWebSocket.open(server.port);
      const open = JSON.parse((await raw.next((m) => m.startsWith("0{"), "the Engine.IO open packet")).slice(1));
      assert.ok(open.sid && open.pingInterval > 0, JSON.stringify(open));
      raw.send(`40/agents,${JSON.stringify({ token: await server.token("u-stall", [acct]) })}`);
      const connected = await raw.next((m) => m.startsWith("40/agents,") || m.startsWith("44/agents,"), "the namespace CONNECT");
      assert.match(connected, /^40\/agents,\{"sid":"[^"]+"/);
      await sleep(15); // the library's connect/registration race; see harness.js connect
      raw.send(`42/agents,0${JSON.stringify(["conversation:join", { conversation_id: conv }])}`);
      const joined = await raw.next((m) => m.startsWith("43/agents,0"), "the join acknowledgement");
      assert.deepEqual(JSON.parse(joined.slice("43/agents,0".length)), [{ ok: true, account_id: acct, conversation_id: conv }]);

      for (const [i, opts] of [WS, WS, POLLING].entries()) {
        const s = await agent(server, `u-reader-${i}`, [acct], opts);
        assert.deepEqual(await ack(s, "conversation:join", { conversation_id: conv }), { ok: true, account_id: acct, conversation_id: conv });
        normal.push(s);
      }
      const slowBefore = (await metric(server, "realtime_slow_clients_disconnected_total")) ?? 0;
      const socketsBefore = await metric(server, "realtime_connected_sockets");
      assert.equal(socketsBefore, 4, "the stalled client and three readers");

      raw.answerPings = false;
      raw.sock.pause();
      const pausedAt = Date.now();

      // Publish 4 KB messages until the server reports the stalled client cut
      // off, then 20 more.
      let cutAt = null;
      let stop = false;
      const watch = (async () => {
        while (!stop && cutAt === null) {
          if (((await metric(server, "realtime_slow_clients_disconnected_total")) ?? 0) > slowBefore) cutAt = Date.now();
          else await sleep(50);
        }
      })();
      const body = "x".repeat(4096);
      const sent = [];
      let cutAfter = null;
      try {
        for (let n = 0; ; n++) {
          if (cutAt !== null && cutAfter === null) cutAfter = n;
          if (cutAfter !== null && n >= cutAfter + 20) break;
          if (cutAt === null && Date.now() - pausedAt > 30000) break;
          sent.push(Date.now());
          await publish(server, "conversation.message.created", { account_id: acct, conversation_id: conv, message_id: `m-${n}`, message_body: `${n} ${body}` });
        }
      } finally {
        stop = true;
        await watch;
      }
      // About 4 MB fill the kernel's buffers (about 1,000 messages here, 2 to
      // 6 s on a busy 2-CPU machine); then 64 frames or a 2 s blocked write.
      assert.ok(cutAt !== null, `the stalled client was not cut off within 30 s (${sent.length} messages of 4 KB published)`);
      assert.ok(cutAt - pausedAt < 20000, `cut off ${cutAt - pausedAt} ms after it stopped reading`);

      await publish(server, "conversation.message.created", { account_id: acct, conversation_id: conv, message_id: "end", message_body: "end" });
      for (const s of normal) await until(`${s.user}: the sentinel`, () => hasMessage(s, "end"), 15000);
      const latencies = [];
      for (const s of normal) {
        const got = messages(s);
        assert.deepEqual(got.map((e) => e.data.message_id), [...sent.map((_, n) => `m-${n}`), "end"], `${s.user}: every message once, in order`);
        got.slice(0, -1).forEach((e, n) => latencies.push(e.at - sent[n]));
        const worst = Math.max(...got.slice(0, -1).map((e, n) => e.at - sent[n]));
        assert.ok(worst <= 2000, `${s.user}: a message took ${worst} ms from publish to receipt`);
        assert.deepEqual(s.disconnects, [], `${s.user} stayed connected`);
      }
      latencies.sort((a, b) => a - b);
      const p99 = latencies[Math.floor(latencies.length * 0.99)];
      const reasons = {};
      for (const reason of ["queue", "write timeout"]) reasons[reason] = await metric(server, "realtime_slow_clients_disconnected_total", { reason });
      t.diagnostic(`${sent.length} messages; cut off ${cutAt - pausedAt} ms after it stopped reading, after m-${cutAfter - 1} (${JSON.stringify(reasons)}); latency p99 ${p99} ms, max ${latencies.at(-1)} ms`);

      // The server closed its TCP connection: reading again reaches the end.
      raw.draining = true;
      raw.sock.resume();
      const how = await Promise.race([raw.closed, sleep(5000).then(() => "still open")]);
      assert.ok(["end", "ECONNRESET", "close"].includes(how), `the stalled client's TCP connection: ${how}`);
      assert.equal(await metric(server, "realtime_slow_clients_disconnected_total"), slowBefore + 1, "exactly one slow client disconnected");
      if (reason) assert.equal(await metric(server, "realtime_slow_clients_disconnected_total", { reason }), 1, `disconnected by the ${reason}`);
      // The Hub let go of it; the readers are still there.
      await until("realtime_connected_sockets to count the readers only", async () => (await metric(server, "realtime_connected_sockets")) === socketsBefore - 1, 5000);
    } finally {
      raw?.sock.destroy();
      for (const s of normal) s.close();
      await server.stop();
    }
  });
}

test("realtime_deliveries_total{path}: websocket sockets are served by our writers, polling and upgrading sockets by the library", { timeout: 60000 }, async () => {
  // A server of its own, so nothing else is delivered while it counts.
  const server = await startServer();
  const acct = "fp-paths";
  const gated = gatedWebSocket();
  const clients = [];
  try {
    const ws = await agent(server, "u-ws", [acct], WS);
    const lp = await agent(server, "u-lp", [acct], POLLING);
    const up = await agent(server, "u-up", [acct], { transports: gated.transports });
    clients.push(ws, lp, up);
    for (const [s, convs] of [[ws, ["c-ws", "c-both"]], [lp, ["c-lp", "c-both"]], [up, ["c-up"]]]) {
      for (const conv of convs) assert.deepEqual(await ack(s, "conversation:join", { conversation_id: conv }), { ok: true, account_id: acct, conversation_id: conv });
    }
    const deliveries = async () => {
      const out = {};
      for (const path of ["websocket", "library"]) {
        out[path] = await metric(server, "realtime_deliveries_total", { path });
        assert.notEqual(out[path], null, `realtime_deliveries_total{path="${path}"} is not exported`);
      }
      return out;
    };
    const K = 25;
    const burst = async (conv) => {
      for (let n = 0; n < K; n++) await publish(server, "conversation.message.created", { account_id: acct, conversation_id: conv, message_id: `${conv}-${n}`, message_body: "hi" });
    };
    const phase = async (conv, receivers, want, between = async () => {}) => {
      const before = await deliveries();
      await burst(conv);
      await between();
      for (const s of receivers) await until(`${s.user}: ${conv}`, () => hasMessage(s, `${conv}-${K - 1}`));
      const after = await deliveries();
      assert.deepEqual({ websocket: after.websocket - before.websocket, library: after.library - before.library }, want, `${conv}: deliveries by path`);
    };

    await phase("c-ws", [ws], { websocket: K, library: 0 });
    await phase("c-lp", [lp], { websocket: 0, library: K });
    await phase("c-both", [ws, lp], { websocket: K, library: K });
    // The default client, mid-upgrade: probe done, upgrade packet held.
    gated.gate.open();
    await until("the upgrade packet held", () => gated.gate.upgradeHeld);
    await phase("c-up", [up], { websocket: 0, library: K }, async () => gated.gate.upgrade());
    await until("the default client on websocket", () => up.io.engine.transport.name === "websocket" && gated.gate.wsMessages > 0);
    // A round trip over the websocket: the server has finished the upgrade.
    assert.deepEqual(await ack(up, "conversation:join", { conversation_id: "c-up2" }), { ok: true, account_id: acct, conversation_id: "c-up2" });
    await phase("c-up2", [up], { websocket: K, library: 0 });
    for (const s of clients) assert.deepEqual(s.disconnects, []);
    for (const [s, ids] of [[ws, ["c-ws", "c-both"]], [lp, ["c-lp", "c-both"]], [up, ["c-up", "c-up2"]]]) {
      assert.deepEqual(messages(s).map((e) => e.data.message_id), ids.flatMap((conv) => range(K).map((n) => `${conv}-${n}`)), `${s.user}: once each, in order`);
    }
  } finally {
    for (const s of clients) s.close();
    await server.stop();
  }
});
