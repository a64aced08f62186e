// Test harness: runs the real turumba-realtime binary and connects the
// official socket.io-client to it.
import { spawn, execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

let builtBinary = null;

// binary returns the path of the service binary: $REALTIME_BIN, or a fresh build.
export function binary() {
  if (process.env.REALTIME_BIN) return process.env.REALTIME_BIN;
  if (!builtBinary) {
    const dir = mkdtempSync(path.join(os.tmpdir(), "realtime-e2e-"));
    builtBinary = path.join(dir, "turumba-realtime");
    execFileSync("go", ["build", "-o", builtBinary, "./cmd/turumba-realtime"], { cwd: repoRoot, stdio: "inherit" });
  }
  return builtBinary;
}

export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// startServer runs the binary (dev mode unless dev: false) and waits for /health.
export async function startServer({ env = {}, args = [], dev = true, port } = {}) {
  port = port || (await freePort());
  const fullArgs = [...(dev ? ["-dev"] : []), "-port", String(port), "-host", "127.0.0.1", ...args];
  const proc = spawn(binary(), fullArgs, {
    env: { PATH: process.env.PATH, LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs = [];
  const keep = (d) => { logs.push(d.toString()); if (logs.length > 2000) logs.shift(); };
  proc.stdout.on("data", keep);
  proc.stderr.on("data", keep);
  const exited = once(proc, "exit");
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`server exited ${proc.exitCode}:\n${logs.join("")}`);
    try {
      const r = await fetch(url + "/health");
      if (r.ok) break;
    } catch {}
    if (Date.now() > deadline) { proc.kill("SIGKILL"); throw new Error(`server did not start:\n${logs.join("")}`); }
    await sleep(50);
  }
  const server = {
    url, port, proc, logs, exited,
    async token(sub, accounts = [], ttl = "1h") {
      const r = await fetch(`${url}/dev/token?sub=${encodeURIComponent(sub)}&accounts=${encodeURIComponent(accounts.join(","))}&ttl=${ttl}`);
      if (!r.ok) throw new Error(`token: ${r.status} ${await r.text()}`);
      return (await r.json()).token;
    },
    async publish(routingKey, event) {
      const r = await fetch(`${url}/dev/events`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ routing_key: routingKey, event }) });
      return { status: r.status, body: await r.json() };
    },
    async stop(signal = "SIGTERM") {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill(signal);
      const [code] = await exited;
      return code;
    },
  };
  return server;
}

// connect opens an /agents socket and resolves once connected (rejects with
// the connect error otherwise).
export function connect(url, token, opts = {}) {
  const socket = io(url + "/agents", {
    auth: token === undefined ? undefined : { token },
    transports: ["websocket"],
    reconnection: false,
    forceNew: true,
    timeout: 5000,
    ...opts,
  });
  recordEvents(socket);
  return new Promise((resolve, reject) => {
    // The server library (socket.io servers/socket v3.0.6) sends the CONNECT
    // acknowledgement before it registers the socket with its client, so a
    // packet sent back within that gap closes the transport. The gap is
    // microseconds; a short pause before the first emit keeps tests clear of it.
    socket.once("connect", () => setTimeout(() => resolve(socket), 15));
    socket.once("connect_error", (err) => { socket.close(); reject(err); });
  });
}

// recordEvents keeps every event a socket receives, for assertions.
function recordEvents(socket) {
  socket.received = [];
  socket.onAny((event, ...args) => socket.received.push({ event, data: args[0] }));
}

// waitFor resolves with the first recorded event matching name (and pred).
export async function waitFor(socket, name, pred = () => true, timeout = 3000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const hit = socket.received.find((e) => e.event === name && pred(e.data));
    if (hit) return hit.data;
    if (Date.now() > deadline) {
      throw new Error(`no ${name} within ${timeout} ms; got ${JSON.stringify(socket.received)}`);
    }
    await sleep(10);
  }
}

// ack emits and resolves with the acknowledgement.
export function ack(socket, event, ...payload) {
  return socket.timeout(3000).emitWithAck(event, ...payload);
}

export function closeAll(...sockets) {
  for (const s of sockets) s && s.close();
}
