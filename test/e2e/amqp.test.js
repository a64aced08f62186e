// RabbitMQ to socket.io-client: every routing key of the table, published to
// the real broker, reaches the right clients as the right event; malformed
// messages land in the dead-letter queue and the next event still arrives.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import amqp from "amqplib";
import { startServer, connect, waitFor, ack, sleep, closeAll } from "./harness.js";
import { contract, fullEvent } from "./contract.js";
import { RABBITMQ_URL, requireServices, uid } from "./fleet.js";

let srv, conn, ch, names, skip;
before(async () => {
  skip = await requireServices();
  if (skip) return;
  const id = uid();
  names = { exchange: `e2e.amqp.${id}`, queue: `e2e.amqp.${id}` };
  srv = await startServer({ env: { RABBITMQ_URL, RABBITMQ_EXCHANGE: names.exchange, RABBITMQ_QUEUE: names.queue } });
  for (let i = 0; i < 100; i++) {
    if ((await fetch(srv.url + "/ready")).ok) break;
    await sleep(100);
  }
  conn = await amqp.connect(RABBITMQ_URL);
  ch = await conn.createConfirmChannel();
});
after(async () => {
  if (skip) return;
  await srv.stop();
  const c = await conn.createChannel();
  for (const q of [names.queue, names.queue + ".dead"]) await c.deleteQueue(q).catch(() => {});
  for (const e of [names.exchange, names.queue + ".dlx"]) await c.deleteExchange(e).catch(() => {});
  await conn.close();
});

async function publish(key, body) {
  ch.publish(names.exchange, key, Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body)));
  await ch.waitForConfirms();
}

test("every routing key published to RabbitMQ reaches exactly the right clients as the right event", async (t) => {
  if (skip) return t.skip(skip);
  const inAccount = await connect(srv.url, await srv.token("q-account", ["acme"]));
  const inConv = await connect(srv.url, await srv.token("q-conv", ["acme"]));
  const assignee = await connect(srv.url, await srv.token("u-assignee", ["acme"]));
  const other = await connect(srv.url, await srv.token("q-globex", ["globex"]));
  await ack(inAccount, "account:subscribe", { account_id: "acme" });
  await ack(inConv, "conversation:join", { conversation_id: "c1" });
  await ack(other, "account:subscribe", { account_id: "globex" });
  await ack(other, "conversation:join", { conversation_id: "c1", account_id: "globex" });
  const who = { account: [inAccount], conv: [inConv], user: [assignee], "account+conv": [inAccount, inConv] };
  const all = [inAccount, inConv, assignee, other];
  for (const row of contract) {
    for (const s of all) s.received = [];
    await publish(row.key, fullEvent());
    for (const [event, rooms, fields] of row.emits) {
      for (const s of who[rooms]) {
        const data = await waitFor(s, event, () => true, 5000);
        assert.deepEqual(Object.keys(data).sort(), fields, `${row.key} -> ${event}`);
      }
    }
    await sleep(100);
    for (const s of all) {
      const expected = row.emits.filter(([, rooms]) => who[rooms].includes(s)).length;
      assert.equal(s.received.length, expected, `${row.key}: ${JSON.stringify(s.received)}`);
    }
  }
  closeAll(...all);
});

test("malformed messages go to the dead-letter queue with body and routing key; the next event still arrives", async (t) => {
  if (skip) return t.skip(skip);
  const s = await connect(srv.url, await srv.token("q-dlq", ["acme"]));
  await ack(s, "account:subscribe", { account_id: "acme" });
  const bad = [
    ["conversation.created", Buffer.from("this is not json")],
    ["conversation.created", Buffer.from("[1,2,3]")],
    ["queue.updated", Buffer.from(JSON.stringify({ unassigned_count: 1 }))],
  ];
  for (const [key, body] of bad) await publish(key, body);
  await publish("queue.updated", { account_id: "acme", unassigned_count: 7 });
  assert.equal((await waitFor(s, "queue:update", () => true, 5000)).unassigned_count, 7);

  const dead = [];
  const deadline = Date.now() + 5000;
  while (dead.length < bad.length && Date.now() < deadline) {
    const m = await ch.get(names.queue + ".dead", { noAck: true });
    if (m) dead.push([m.fields.routingKey, m.content.toString()]);
    else await sleep(100);
  }
  assert.deepEqual(dead, bad.map(([k, b]) => [k, b.toString()]));
  s.close();
});
