// The demo page in a real browser: every carrier, two tabs chatting, a tampered token, a
// cross-site page trying to ride the cookie, and the demo over https:// and wss://. Run with
// ./run.sh (it builds and installs first).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { once } from "node:events";
import { chromium } from "playwright-core";

const BIN = process.env.WSGATE_BIN ?? new URL("../../target/debug/wsgate", import.meta.url).pathname;
const OUT = new URL("./out/", import.meta.url).pathname;
const WAIT = 10_000;

let server; // the wsgate process
let base; // http://127.0.0.1:PORT
let browser;

/** Starts wsgate in dev mode on a free port and reads the address from its banner. */
async function startWsgate(args = [], extraEnv = {}) {
  const env = { ...process.env, ...extraEnv };
  delete env.WSGATE_SECRET; // no secret: dev mode
  const child = spawn(BIN, ["serve", "--addr", "127.0.0.1:0", ...args], { env, stdio: ["ignore", "pipe", "inherit"] });
  let output = "";
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("wsgate did not start: " + output)), WAIT);
    child.stdout.on("data", (chunk) => {
      output += chunk;
      const match = output.match(/Listening on (\S+) /);
      if (match) { clearTimeout(timer); resolve(match[1]); }
    });
    child.on("exit", (code) => reject(new Error("wsgate exited with " + code + ": " + output)));
  });
  child.stdout.resume();
  return { child, address };
}

before(async () => {
  mkdirSync(OUT, { recursive: true });
  const started = await startWsgate();
  server = started.child;
  base = "http://" + started.address;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run", "--disable-quic"],
  });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  if (server && server.exitCode === null) await Promise.race([once(server, "exit"), new Promise((r) => setTimeout(r, 5000))]);
});

/** A fresh page (own cookie jar) on the demo, as `username` in `room`. */
async function openDemo(username, room, url = base + "/") {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  await page.goto(url);
  await page.fill("#username", username);
  await page.fill("#room", room);
  return page;
}

async function connect(page, carrier, { tamper = false } = {}) {
  await page.click("#get-token");
  await page.waitForFunction(() => document.getElementById("token").value.split(".").length === 3);
  if (tamper) await page.click("#tamper");
  await page.check(`input[name=carrier][value=${carrier}]`);
  await page.click("#connect");
}

async function waitForStatus(page, cssClass) {
  await page.waitForSelector(`#status.${cssClass}`);
  return page.textContent("#status");
}

async function say(page, text) {
  await page.fill("#message", text);
  await page.click("#send-button");
}

async function metric(sample) {
  const body = await (await fetch(base + "/metrics")).text();
  const line = body.split("\n").find((l) => l.startsWith(sample + " "));
  assert.ok(line, `no ${sample} in /metrics`);
  return Number(line.split(" ")[1]);
}

for (const carrier of ["subprotocol", "query", "cookie"]) {
  test(`the ${carrier} carrier connects and chats`, { timeout: 30_000 }, async () => {
    const page = await openDemo(`user-${carrier}`, `room-${carrier}`);
    await connect(page, carrier);
    const status = await waitForStatus(page, "ok");
    assert.match(status, new RegExp(`token in the ${carrier}`));
    assert.match(status, /Protocol: chat/);
    await page.waitForSelector(`#log li:has-text("Welcome, user-${carrier}!")`);
    await say(page, `hello via ${carrier}`);
    await page.waitForSelector(`#log li:has-text("user-${carrier}: hello via ${carrier}")`);
    await page.context().close();
  });
}

test("two pages in one room see each other", { timeout: 30_000 }, async () => {
  const alice = await openDemo("alice", "duo");
  await connect(alice, "subprotocol");
  await waitForStatus(alice, "ok");
  const bob = await openDemo("bob", "duo");
  await connect(bob, "query");
  await waitForStatus(bob, "ok");
  await alice.waitForSelector('#log li:has-text("bob joined")');
  await say(alice, "hi bob");
  await bob.waitForSelector('#log li:has-text("alice: hi bob")');
  await say(bob, "hi alice");
  await alice.waitForSelector('#log li:has-text("bob: hi alice")');
  mkdirSync(OUT, { recursive: true });
  await alice.screenshot({ path: OUT + "demo.png", fullPage: true });
  assert.ok(statSync(OUT + "demo.png").size > 5_000, "the screenshot is empty");
  await bob.context().close();
  await alice.waitForSelector('#log li:has-text("bob left")');
  await alice.context().close();
});

test("a tampered token shows 4401 on the page", { timeout: 30_000 }, async () => {
  const page = await openDemo("mallory", "lobby");
  await connect(page, "subprotocol", { tamper: true });
  const status = await waitForStatus(page, "bad");
  assert.equal(await page.getAttribute("#status", "data-code"), "4401");
  assert.match(status, /bad signature/);
  await page.screenshot({ path: OUT + "refused.png" });
  assert.ok(statSync(OUT + "refused.png").size > 1_000);
  await page.context().close();
});

test("connecting with no token says why, with 4401", { timeout: 30_000 }, async () => {
  const page = await openDemo("nobody", "lobby");
  await page.check("input[name=carrier][value=subprotocol]");
  await page.click("#connect"); // the natural first click: no token yet
  const status = await waitForStatus(page, "bad");
  assert.equal(await page.getAttribute("#status", "data-code"), "4401");
  assert.match(status, /empty credential/);
  await page.context().close();
});

test("over https the demo connects with wss://", { timeout: 40_000 }, async () => {
  // A certificate made now, as README says; Chromium is told to accept it (test only).
  const dir = mkdtempSync(join(tmpdir(), "wsgate-tls-"));
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")],
    { stdio: "ignore" });
  const { child, address } = await startWsgate(["--tls-cert", join(dir, "cert.pem"), "--tls-key", join(dir, "key.pem")]);
  const tlsBrowser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run", "--disable-quic", "--ignore-certificate-errors"],
  });
  try {
    for (const carrier of ["subprotocol", "cookie"]) {
      const page = await (await tlsBrowser.newContext()).newPage();
      page.setDefaultTimeout(WAIT);
      const sockets = [];
      page.on("websocket", (ws) => sockets.push(ws.url()));
      await page.goto(`https://${address}/`);
      await page.fill("#username", `tls-${carrier}`);
      await page.fill("#room", "tls");
      await connect(page, carrier);
      await waitForStatus(page, "ok");
      await page.waitForSelector(`#log li:has-text("Welcome, tls-${carrier}!")`);
      await say(page, `hello over wss via ${carrier}`);
      await page.waitForSelector(`#log li:has-text("tls-${carrier}: hello over wss via ${carrier}")`);
      assert.ok(sockets.length > 0 && sockets.every((url) => url.startsWith(`wss://${address}/ws/chat/tls`)), sockets.join(" "));
      await page.context().close();
    }
  } finally {
    await tlsBrowser.close();
    child.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the refresh switch keeps a connection open past its first token's exp", { timeout: 40_000 }, async () => {
  // No leeway and a 2 s refresh window; the page asks for 4 s tokens.
  const { child, address } = await startWsgate(["--leeway", "0", "--refresh-window", "2s"]);
  try {
    const page = await openDemo("rita", "refresh", `http://${address}/?ttl=4`);
    await connect(page, "subprotocol");
    await waitForStatus(page, "ok");
    const claims = await page.textContent("#claims");
    assert.match(claims, /"sub": "rita"/);
    assert.match(claims, /"alg": "HS256"/);
    // Two refreshes: well past the first token's exp (4 s).
    await page.waitForFunction(() => [...document.querySelectorAll("#log li")].filter((li) => li.textContent.startsWith("Token refreshed")).length >= 2, null, { timeout: 20_000 });
    assert.match(await page.textContent("#expiry"), /Token expires in \d+ s/);
    await say(page, "still here");
    await page.waitForSelector('#log li:has-text("rita: still here")');
    assert.equal(await page.getAttribute("#status", "class"), "ok");
    await page.context().close();
  } finally {
    child.kill("SIGTERM");
  }
});

test("a revoke from the admin API closes the page's socket with 4401 and says why", { timeout: 30_000 }, async () => {
  const adminKey = "browser-test-admin-key-0123456789abcdef";
  const adminPort = 19000 + Math.floor(Math.random() * 900);
  const { child, address } = await startWsgate(["--admin-addr", `127.0.0.1:${adminPort}`], { WSGATE_ADMIN_KEY: adminKey });
  try {
    const page = await openDemo("victor", "lobby", `http://${address}/`);
    await connect(page, "query");
    await waitForStatus(page, "ok");
    const response = await fetch(`http://127.0.0.1:${adminPort}/admin/revoke`, {
      method: "POST",
      headers: { authorization: `Bearer ${adminKey}`, "content-type": "application/json" },
      body: JSON.stringify({ user: "victor" }),
    });
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { closed: 1 });
    const status = await waitForStatus(page, "bad");
    assert.equal(await page.getAttribute("#status", "data-code"), "4401");
    assert.match(status, /revoked/);
    await page.context().close();
  } finally {
    child.kill("SIGTERM");
  }
});

test("a page from another origin cannot use the cookie", { timeout: 30_000 }, async () => {
  // The victim logs in on the demo page: the browser now holds access_token for 127.0.0.1.
  const victim = await openDemo("victim", "private");
  await connect(victim, "cookie");
  await waitForStatus(victim, "ok");

  // Another origin on the same host (same *site*, so SameSite=Strict does not stop the
  // cookie): only the server's Origin check does.
  const wsUrl = base.replace("http://", "ws://") + "/ws/chat/private";
  const evil = createServer((_, response) => {
    response.writeHead(200, { "content-type": "text/html" });
    response.end(`<!doctype html><title>evil</title><p id="result">pending</p><script>
      const ws = new WebSocket(${JSON.stringify(wsUrl)}, ["chat"]);
      ws.onopen = () => { document.getElementById("result").textContent = "opened"; };
      ws.onclose = (e) => { document.getElementById("result").textContent = "closed " + e.code; };
    </script>`);
  });
  evil.listen(0, "127.0.0.1");
  await once(evil, "listening");
  const forbiddenBefore = await metric('wsgate_handshake_rejections_total{reason="forbidden"}');
  try {
    const page = await victim.context().newPage(); // same browser profile: the cookie is there
    page.setDefaultTimeout(WAIT);
    await page.goto(`http://127.0.0.1:${evil.address().port}/`);
    await page.waitForFunction(() => document.getElementById("result").textContent !== "pending");
    assert.equal(await page.textContent("#result"), "closed 1006");
    assert.equal(await metric('wsgate_handshake_rejections_total{reason="forbidden"}'), forbiddenBefore + 1);
  } finally {
    evil.close();
    await victim.context().close();
  }
});

/**
 * Takes `page` offline and drops its socket: the page retries by itself, and every retry fails
 * until `setOffline(false)`, so what happens meanwhile is missed, however slow the machine.
 */
async function dropWhileOffline(page) {
  await page.context().setOffline(true);
  await page.click("#drop");
  // The first retry failed; the second is on its way.
  await page.waitForFunction(() => /Reconnecting in \d+\.\d s… \(attempt 2\)/.test(document.getElementById("status").textContent));
  assert.equal(await page.getAttribute("#status", "class"), "wait");
}

async function logOf(page) {
  return page.$$eval("#log li", (items) => items.map((li) => li.textContent));
}

/** Alice and Bob in `room`; Alice has seen Bob join. */
async function aliceAndBob(room, url) {
  const alice = await openDemo("alice", room, url);
  await connect(alice, "query"); // the token and since side by side in the query
  await waitForStatus(alice, "ok");
  const bob = await openDemo("bob", room, url);
  await connect(bob, "subprotocol");
  await waitForStatus(bob, "ok");
  await alice.waitForSelector('#log li:has-text("bob joined")');
  return { alice, bob };
}

async function bobSaysThreeWhileAliceIsAway(alice, bob) {
  await dropWhileOffline(alice);
  await bob.waitForSelector('#log li:has-text("alice left")');
  for (const n of ["one", "two", "three"]) {
    await say(bob, `missed ${n}`);
    await bob.waitForSelector(`#log li:has-text("bob: missed ${n}")`);
  }
  await alice.context().setOffline(false);
}

test("after a drop the page reconnects by itself and shows what it missed, once each, in order", { timeout: 60_000 }, async () => {
  const { alice, bob } = await aliceAndBob("resume");
  await bobSaysThreeWhileAliceIsAway(alice, bob);
  // Backoff reaches 2-4 s by now, and the welcome must come first: a longer wait.
  await alice.waitForSelector('#log li:has-text("Recovered")', { timeout: 20_000 });
  await waitForStatus(alice, "ok");
  const log = await logOf(alice);
  // Since her last seq: her own leave, Bob's three, and her own join on the new connection.
  assert.deepEqual(log.slice(log.lastIndexOf("Welcome, alice!")), [
    "Welcome, alice!", "alice left", "bob: missed one", "bob: missed two", "bob: missed three", "alice joined",
    "Recovered 5 messages missed while disconnected",
  ]);
  await bob.waitForSelector('#log li:has-text("alice joined")');
  await say(bob, "live again");
  await alice.waitForSelector('#log li:has-text("bob: live again")');
  await say(alice, "back");
  await bob.waitForSelector('#log li:has-text("alice: back")');
  assert.equal((await logOf(alice)).filter((line) => line.startsWith("bob: missed")).length, 3);
  await alice.screenshot({ path: OUT + "recovered.png", fullPage: true });

  // Disconnect while it waits to retry: it stops for good.
  await dropWhileOffline(alice);
  await alice.click("#disconnect");
  assert.equal(await alice.textContent("#status"), "Disconnected; not reconnecting.");
  assert.equal(await alice.isEnabled("#connect"), true);
  await alice.context().setOffline(false);
  const welcomes = (await logOf(alice)).filter((line) => line === "Welcome, alice!").length;
  // Nothing to wait for when nothing should happen: longer than the next retry could take (1 s).
  await alice.waitForTimeout(1_500);
  assert.equal((await logOf(alice)).filter((line) => line === "Welcome, alice!").length, welcomes);
  assert.equal(await alice.textContent("#status"), "Disconnected; not reconnecting.");
  await alice.context().close();
  await bob.context().close();
});

test("when history no longer holds what was missed, the page says so and carries on", { timeout: 60_000 }, async () => {
  const { child, address } = await startWsgate(["--history", "2"]);
  try {
    const { alice, bob } = await aliceAndBob("forgetful", `http://${address}/`);
    await bobSaysThreeWhileAliceIsAway(alice, bob); // four frames missed, two kept
    await alice.waitForSelector('#log li:has-text("Could not recover")', { timeout: 20_000 });
    await waitForStatus(alice, "ok");
    assert.deepEqual((await logOf(alice)).filter((line) => line.startsWith("bob: missed")), []);
    await say(bob, "after the gap");
    await alice.waitForSelector('#log li:has-text("bob: after the gap")');
    await alice.context().close();
    await bob.context().close();
  } finally {
    child.kill("SIGTERM");
  }
});
