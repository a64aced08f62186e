// Two agents in two headless Chromium pages of the dev console (/dev/):
// server-injected events reach both inboxes, typing is shown and then expires
// on the server's TTL, and closing a page takes that agent offline for the
// other. Writes a screenshot to test/e2e/out/console.png.
//
// Needs Debian's chromium at /usr/bin/chromium (CHROMIUM to override); without
// it the test skips, unless REALTIME_REQUIRE_SERVICES=1.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "./harness.js";

const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const required = process.env.REALTIME_REQUIRE_SERVICES === "1";
const missing = !existsSync(chromiumPath);
if (missing && required) throw new Error(`${chromiumPath} is missing and REALTIME_REQUIRE_SERVICES=1: apt-get install -y chromium`);
const skip = missing ? `${chromiumPath} not found (apt-get install -y chromium)` : false;

const outDir = path.join(path.dirname(fileURLToPath(import.meta.url)), "out");
const TTL_SECONDS = 1;

let srv, browser;
before(async () => {
  if (skip) return;
  const { chromium } = await import("playwright-core");
  srv = await startServer({ env: { TYPING_TTL_SECONDS: String(TTL_SECONDS) } });
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
    timeout: 30000,
  });
});
after(async () => {
  await browser?.close();
  await srv?.stop();
});

// agentPage opens the console as user, connected, in its own browser context
// (a separate browser profile: no shared storage between the two agents).
async function agentPage(user, accounts) {
  const ctx = await browser.newContext({ viewport: { width: 1440, height: 860 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(8000);
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // The console's own failed requests (the invalid injection's 422) are expected.
  page.on("console", (m) => { if (m.type() === "error" && !/status of 422/.test(m.text())) errors.push(m.text()); });
  page.errors = errors;
  await page.goto(`${srv.url}/dev/?user=${user}&accounts=${accounts}&connect=1`);
  await page.waitForSelector("#state.connected");
  return page;
}

test("two agents in the console: inbox, messages, assignment, typing with expiry, presence", { skip, timeout: 90000 }, async () => {
  const alice = await agentPage("alice", "acme");
  const bob = await agentPage("bob", "acme");

  // Presence: each sees the other online; both subscribed to acme.
  await alice.waitForSelector('#agents li[data-agent="bob"][data-status="online"]');
  await bob.waitForSelector('#agents li[data-agent="alice"][data-status="online"]');
  assert.equal(await alice.getAttribute('#accountList li[data-account="acme"]', "data-subscribed"), "true");
  // The same-origin page upgraded to websocket.
  await alice.waitForFunction(() => document.getElementById("connInfo").textContent === "websocket");

  // An event injected on the server appears in both inboxes.
  const now = new Date().toISOString();
  const created = await srv.publish("conversation.created", { account_id: "acme", conversation_id: "c-1001", channel_id: "web",
    contact_identifier: "dana@example.com", status: "open", created_at: now });
  assert.equal(created.status, 202);
  await srv.publish("conversation.created", { account_id: "acme", conversation_id: "c-1002", channel_id: "whatsapp",
    contact_identifier: "+1 555 0100", status: "open", created_at: now });
  await srv.publish("conversation.status_changed", { account_id: "acme", conversation_id: "c-1002", status: "pending",
    priority: "high", labels: ["billing", "vip"] });
  for (const page of [alice, bob]) {
    await page.waitForSelector('#inbox li[data-conversation="c-1001"]');
    await page.waitForSelector('#inbox li[data-conversation="c-1002"] .status.pending');
  }
  // Another account's events reach neither.
  await srv.publish("conversation.created", { account_id: "globex", conversation_id: "c-secret", status: "open" });

  // Both open the conversation; messages reach both threads.
  for (const page of [alice, bob]) {
    await page.click('#inbox li[data-conversation="c-1001"]');
    await page.waitForSelector('#inbox li[data-conversation="c-1001"].open');
  }
  await srv.publish("conversation.message.created", { account_id: "acme", conversation_id: "c-1001", message_id: "m1",
    sender_type: "contact", message_body: "Hi! My parcel has not arrived yet.", is_private: false, created_at: now });
  await srv.publish("conversation.message.sent", { account_id: "acme", conversation_id: "c-1001", message_id: "m2",
    sender_type: "agent", message_body: "Sorry to hear that, let me check the tracking number.", is_private: false, created_at: now });
  await srv.publish("conversation.message.sent", { account_id: "acme", conversation_id: "c-1001", message_id: "m3",
    sender_type: "agent", message_body: "Repeat buyer: offer free shipping.", is_private: true, created_at: now });
  for (const page of [alice, bob]) {
    await page.waitForSelector('#thread li[data-message="m3"].private');
    assert.equal(await page.textContent('#thread li[data-message="m1"] div:last-child'), "Hi! My parcel has not arrived yet.");
  }

  // Assignment: a toast for the assignee only, and the inbox shows the assignee for both.
  await srv.publish("conversation.assigned", { account_id: "acme", conversation_id: "c-1001", assignee_id: "bob",
    assigned_by: "router", rule_name: "round-robin", status: "open" });
  await bob.waitForSelector(".toast:has-text('Assigned to you: c-1001')");
  await alice.waitForSelector('#inbox li[data-conversation="c-1001"]:has-text("→ bob")');
  assert.equal(await alice.locator(".toast:has-text('Assigned to you')").count(), 0);

  // Typing: alice types once and stops; bob sees the indicator, then sees it
  // end when the server's TTL expires it (the console would send its own stop
  // only after 4 s idle, so the end within the window is the server's expiry).
  await alice.type("#compose", "Checking");
  await bob.waitForSelector("#typing:has-text('alice is typing')");
  const shown = Date.now();
  mkdirSync(outDir, { recursive: true });
  await bob.screenshot({ path: path.join(outDir, "console.png") });
  await bob.waitForSelector("#typing:empty", { timeout: 5000 });
  const elapsed = Date.now() - shown;
  assert.ok(elapsed < 3500, `indicator ended after ${elapsed} ms; TTL is ${TTL_SECONDS}s`);
  assert.equal(await alice.locator('#log div[data-kind="out"][data-name="conversation:typing:stop"]').count(), 0,
    "alice sent no stop: the end of the indicator is the server's expiry");
  assert.equal(await bob.locator('#log div[data-kind="in"][data-name="conversation:typing"]:has-text("\\"typing\\":false")').count(), 1);

  // The inject form of the console sends any routing key with a JSON body.
  await bob.fill("#key", "queue.updated");
  await bob.fill("#body", JSON.stringify({ account_id: "acme", unassigned_count: 3, oldest_waiting_seconds: 42 }));
  await bob.click("#injectBtn");
  await bob.waitForSelector("#injectResult:has-text('accepted queue.updated')");
  for (const page of [alice, bob]) await page.waitForSelector("#queue:has-text('3 unassigned')");
  await bob.fill("#key", "conversation.created");
  await bob.fill("#body", JSON.stringify({ conversation_id: "no-account" }));
  await bob.click("#injectBtn");
  await bob.waitForSelector("#injectResult.err:has-text('account_id')");

  // Nobody saw the other account's conversation.
  for (const page of [alice, bob]) assert.equal(await page.locator('#inbox li[data-conversation="c-secret"]').count(), 0);

  // Alice closes her page: bob sees her go offline.
  await alice.context().close();
  await bob.waitForSelector('#agents li[data-agent="alice"][data-status="offline"]', { timeout: 10000 });
  await bob.screenshot({ path: path.join(outDir, "console-offline.png") });

  assert.deepEqual(bob.errors, [], "no page errors");
  await bob.context().close();
});
