// Fleet helpers: several turumba-realtime processes sharing the real Redis and
// RabbitMQ, outside dev mode. Tokens are RS256 JWTs signed here and verified
// by every instance against a JWKS served here (as Cognito's would be), so a
// token is valid on every instance. Events go to RabbitMQ with amqplib.
import { generateKeyPairSync, sign, randomBytes } from "node:crypto";
import http from "node:http";
import net from "node:net";
import { once } from "node:events";
import amqp from "amqplib";
import { startServer, sleep } from "./harness.js";

export const REDIS_URL = process.env.REDIS_URL || "redis://127.0.0.1:6379";
export const RABBITMQ_URL = process.env.RABBITMQ_URL || "amqp://guest:guest@127.0.0.1:5672/";

// servicesUp reports whether Redis and RabbitMQ accept TCP connections.
export async function servicesUp() {
  const reach = (url, port) => new Promise((resolve) => {
    const u = new URL(url);
    const s = net.connect({ host: u.hostname, port: Number(u.port) || port });
    const done = (ok) => { s.destroy(); resolve(ok); };
    s.setTimeout(1000, () => done(false));
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
  return (await reach(REDIS_URL, 6379)) && (await reach(RABBITMQ_URL, 5672));
}

// requireServices returns a skip reason when the services are down, or throws
// when REALTIME_REQUIRE_SERVICES=1.
export async function requireServices() {
  if (await servicesUp()) return null;
  const msg = `Redis (${REDIS_URL}) or RabbitMQ (${RABBITMQ_URL}) is unreachable`;
  if (process.env.REALTIME_REQUIRE_SERVICES === "1") throw new Error(msg + " and REALTIME_REQUIRE_SERVICES=1");
  return msg;
}

export const uid = () => randomBytes(5).toString("hex");

// Issuer is a stand-in for a Cognito user pool: it serves its JWKS and signs
// id tokens.
export class Issuer {
  async start() {
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    this.key = privateKey;
    this.kid = "test-" + uid();
    const jwk = { ...publicKey.export({ format: "jwk" }), kid: this.kid, alg: "RS256", use: "sig" };
    this.server = http.createServer((req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    this.server.listen(0, "127.0.0.1");
    await once(this.server, "listening");
    const base = `http://127.0.0.1:${this.server.address().port}`;
    this.issuer = base + "/pool";
    this.jwksURI = base + "/pool/.well-known/jwks.json";
    return this;
  }

  // token signs an id token for sub with the given accounts, expiring in ttl
  // seconds (negative: already expired).
  token(sub, accounts, ttl = 3600) {
    const now = Math.floor(Date.now() / 1000);
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const head = b64({ alg: "RS256", typ: "JWT", kid: this.kid });
    const body = b64({ sub, iss: this.issuer, token_use: "id", iat: now, exp: now + ttl, "custom:account_ids": accounts.join(","), email: `${sub}@example.com` });
    const sig = sign("RSA-SHA256", Buffer.from(`${head}.${body}`), this.key).toString("base64url");
    return `${head}.${body}.${sig}`;
  }

  env() {
    return { JWKS_URI: this.jwksURI, COGNITO_ISSUER: this.issuer };
  }

  close() { this.server.close(); }
}

// startInstance runs one binary of a fleet and waits until it is ready (its
// consumer attached, Redis connected).
export async function startInstance(issuer, names, env = {}) {
  const srv = await startServer({
    dev: false,
    env: {
      ...issuer.env(),
      REDIS_URL, RABBITMQ_URL,
      RABBITMQ_EXCHANGE: names.exchange, RABBITMQ_QUEUE: names.queue,
      REDIS_KEY_PREFIX: names.prefix,
      SHUTDOWN_TIMEOUT: "5s",
      ...env,
    },
  });
  const deadline = Date.now() + 15000;
  for (;;) {
    try {
      const r = await fetch(srv.url + "/ready");
      if (r.ok) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`instance not ready:\n${srv.logs.join("")}`);
    await sleep(50);
  }
  return srv;
}

// fleetNames returns unique RabbitMQ names and Redis prefix for a test run.
export function fleetNames() {
  const id = uid();
  return { exchange: `e2e.scaling.${id}`, queue: `e2e.scaling.${id}`, prefix: `e2e-scaling-${id}:` };
}

// Publisher publishes events to the fleet's exchange with confirms.
export class Publisher {
  async open(names) {
    this.names = names;
    this.conn = await amqp.connect(RABBITMQ_URL);
    this.ch = await this.conn.createConfirmChannel();
    await this.ch.checkExchange(names.exchange);
    return this;
  }

  publish(routingKey, event) {
    return this.ch.publish(this.names.exchange, routingKey, Buffer.from(JSON.stringify(event)), { contentType: "application/json", persistent: false });
  }

  confirmed() { return this.ch.waitForConfirms(); }

  // queueDepth returns the messages ready in the fleet's queue.
  async queueDepth() {
    const ch = await this.conn.createChannel();
    try {
      return (await ch.checkQueue(this.names.queue)).messageCount;
    } finally {
      await ch.close().catch(() => {});
    }
  }

  // cleanup deletes the fleet's exchanges and queues.
  async cleanup() {
    const ch = await this.conn.createChannel();
    const n = this.names;
    for (const q of [n.queue, n.queue + ".dead"]) await ch.deleteQueue(q).catch(() => {});
    for (const e of [n.exchange, n.queue + ".dlx"]) await ch.deleteExchange(e).catch(() => {});
    await ch.close().catch(() => {});
    await this.conn.close().catch(() => {});
  }
}

// Redis is a minimal RESP client, enough for INFO, SCAN, DEL and EXISTS.
export class Redis {
  async open(url = REDIS_URL) {
    const u = new URL(url);
    this.sock = net.connect({ host: u.hostname, port: Number(u.port) || 6379 });
    await once(this.sock, "connect");
    this.buf = Buffer.alloc(0);
    this.waiting = [];
    this.sock.on("data", (d) => { this.buf = Buffer.concat([this.buf, d]); this.drain(); });
    if (u.pathname.length > 1) await this.command("SELECT", u.pathname.slice(1));
    return this;
  }

  command(...args) {
    const parts = [`*${args.length}\r\n`];
    for (const a of args) { const s = String(a); parts.push(`$${Buffer.byteLength(s)}\r\n${s}\r\n`); }
    this.sock.write(parts.join(""));
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  drain() {
    while (this.waiting.length) {
      const r = parseReply(this.buf, 0);
      if (!r) return;
      this.buf = this.buf.subarray(r.end);
      const w = this.waiting.shift();
      r.value instanceof Error ? w.reject(r.value) : w.resolve(r.value);
    }
  }

  // stat returns one field of INFO (as a number when it is one).
  async info(section) {
    const text = await this.command("INFO", section);
    const out = {};
    for (const line of text.split("\r\n")) {
      const [k, v] = line.split(":");
      if (v !== undefined) out[k] = Number.isNaN(Number(v)) ? v : Number(v);
    }
    return out;
  }

  // deletePrefix deletes every key starting with prefix.
  async deletePrefix(prefix) {
    let cursor = "0";
    do {
      const [next, keys] = await this.command("SCAN", cursor, "MATCH", prefix + "*", "COUNT", 1000);
      if (keys.length) await this.command("DEL", ...keys);
      cursor = next;
    } while (cursor !== "0");
  }

  close() { this.sock.destroy(); }
}

function parseReply(buf, at) {
  const nl = buf.indexOf("\r\n", at);
  if (nl < 0) return null;
  const type = String.fromCharCode(buf[at]);
  const line = buf.toString("utf8", at + 1, nl);
  const end = nl + 2;
  switch (type) {
    case "+": return { value: line, end };
    case "-": return { value: new Error(line), end };
    case ":": return { value: Number(line), end };
    case "$": {
      const n = Number(line);
      if (n < 0) return { value: null, end };
      if (buf.length < end + n + 2) return null;
      return { value: buf.toString("utf8", end, end + n), end: end + n + 2 };
    }
    case "*": {
      const n = Number(line);
      const out = [];
      let pos = end;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, pos);
        if (!r) return null;
        out.push(r.value);
        pos = r.end;
      }
      return { value: out, end: pos };
    }
  }
  throw new Error(`unexpected RESP type ${type}`);
}

// Proxy stands for a load balancer: it forwards each TCP connection to the
// first live backend of its list (reordered with use()), and can cut every
// open connection and refuse new ones for a while.
export class Proxy {
  constructor(backends) { this.backends = backends.map((b) => new URL(b).port); this.conns = new Set(); this.paused = false; }

  async start() {
    this.server = net.createServer((c) => this.accept(c));
    this.server.listen(0, "127.0.0.1");
    await once(this.server, "listening");
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  use(...backends) { this.backends = backends.map((b) => new URL(b).port); }

  accept(c, tried = 0) {
    if (this.paused || tried >= this.backends.length) { c.destroy(); return; }
    const up = net.connect({ host: "127.0.0.1", port: Number(this.backends[tried]) });
    up.once("error", () => { up.destroy(); this.accept(c, tried + 1); });
    up.once("connect", () => {
      up.removeAllListeners("error");
      this.conns.add(c); this.conns.add(up);
      const gone = () => { c.destroy(); up.destroy(); this.conns.delete(c); this.conns.delete(up); };
      c.on("error", gone); up.on("error", gone); c.on("close", gone); up.on("close", gone);
      c.pipe(up); up.pipe(c);
    });
  }

  // cut closes every open connection (both ends see it at once).
  cut() { for (const s of this.conns) s.destroy(); this.conns.clear(); }

  pause(on) { this.paused = on; }

  close() { this.cut(); this.server.close(); }
}
