// The dashboard in a real browser: headless Chromium (Debian's package, driven by
// playwright-core) loads the page of a running cluster, sees the right number of workers, then
// kills one worker with SIGKILL and sees the restart appear in the events timeline without a
// reload. Saves a screenshot.
//
// Usage: node dashboard.mjs DASHBOARD_URL EXPECTED_WORKERS SCREENSHOT_PATH
// Run by crates/rusk/tests/dashboard_browser.rs, which starts the cluster.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, expectedArg, screenshot] = process.argv.slice(2);
const expected = Number(expectedArg);
if (!url || !expected || !screenshot) {
  console.error("usage: node dashboard.mjs DASHBOARD_URL EXPECTED_WORKERS SCREENSHOT_PATH");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "rusk-chromium-"));
const step = (msg) => console.log(`[browser] ${msg}`);

// A fresh profile (--user-data-dir) every run: playwright passes it for a persistent context.
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let failed = false;
try {
  const page = context.pages()[0] || await context.newPage();
  page.on("pageerror", (e) => { console.error(`[browser] page error: ${e}`); failed = true; });
  page.on("console", (m) => { if (m.type() === "error") console.error(`[browser] console: ${m.text()}`); });
  let loads = 0;
  page.on("load", () => { loads += 1; });

  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 15000 });
  await page.waitForFunction(() => document.getElementById("conn").textContent === "live", null, { timeout: 15000 });
  step("stream connected");
  await page.waitForFunction(
    (n) => document.querySelectorAll("tr.worker-row").length === n &&
      document.getElementById("worker-count").textContent === String(n),
    expected, { timeout: 20000 });
  step(`sees ${expected} workers`);
  // Each worker's row names its host.
  const shown = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll("tr.worker-row")]
    .map((tr) => [tr.dataset.worker, tr.querySelector("td.worker-host").textContent])));
  const listed = await (await fetch(new URL("/api/status", url))).json();
  for (const w of listed.workers) {
    if (shown[w.id] !== w.host) throw new Error(`worker ${w.id} shows host "${shown[w.id]}", expected "${w.host}"`);
  }
  step("each worker row names its host");
  const slotChips = await page.locator(".host .chip").count();
  if (slotChips < expected) throw new Error(`expected ${expected} slot chips, saw ${slotChips}`);

  // Kill a supervised worker as an operator would never do: SIGKILL.
  const status = await (await fetch(new URL("/api/status", url))).json();
  const victim = status.workers.find((w) => w.slot != null);
  if (!victim) throw new Error("no supervised worker to kill");
  await page.evaluate(() => { window.__sameDocument = true; });
  process.kill(victim.pid, "SIGKILL");
  const started = Date.now();
  step(`killed worker ${victim.id} (pid ${victim.pid}, incarnation ${victim.incarnation})`);

  // The restart appears in the timeline, live, naming the victim's host.
  const restartRow = `tr.event-row[data-cause="crash"][data-restart="1"][data-old="${victim.incarnation}"]`;
  await page.waitForSelector(restartRow, { timeout: 30000 });
  step(`restart event shown ${Date.now() - started} ms after the kill`);
  const eventHost = await page.locator(`${restartRow} td.event-host`).first().textContent();
  if (eventHost !== victim.host) throw new Error(`restart event names host "${eventHost}", expected "${victim.host}"`);
  await page.waitForFunction(
    (n) => document.querySelectorAll("tr.worker-row").length === n, expected, { timeout: 20000 });
  const same = await page.evaluate(() => window.__sameDocument === true);
  if (!same || loads > 1) throw new Error(`the page was reloaded (loads: ${loads})`);
  step("no reload; worker count back to " + expected);
  await page.waitForTimeout(600); // let the row's highlight show in the picture
  await page.screenshot({ path: screenshot, fullPage: true });
  step(`screenshot: ${screenshot}`);
} catch (e) {
  failed = true;
  console.error(`[browser] FAILED: ${e && e.stack || e}`);
  try {
    const pages = context.pages();
    if (pages[0]) await pages[0].screenshot({ path: screenshot.replace(/\.png$/, "-failed.png"), fullPage: true });
  } catch {}
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
