// Load the dashboard of a (large) cluster in headless Chromium, wait until it shows
// EXPECTED_WORKERS worker rows, let it update for a few seconds, and report how long the page
// took to render each update. Saves a screenshot.
//
// Usage: node screenshot.mjs DASHBOARD_URL EXPECTED_WORKERS SCREENSHOT_PATH
// Prints one JSON line: {"first_render_ms", "renders", "last_render_ms", "max_render_ms"}.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, expectedArg, screenshot] = process.argv.slice(2);
const expected = Number(expectedArg);
const profile = mkdtempSync(join(tmpdir(), "rusk-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let code = 0;
try {
  const page = context.pages()[0] || await context.newPage();
  const t0 = Date.now();
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 15000 });
  await page.waitForFunction(
    (n) => document.querySelectorAll("tr.worker-row").length === n, expected, { timeout: 20000 });
  const first = Date.now() - t0;
  await page.waitForTimeout(3000);
  const r = await page.evaluate(() => window.__rusk);
  await page.screenshot({ path: screenshot, fullPage: false });
  console.log(JSON.stringify({
    first_render_ms: first, renders: r.renders,
    last_render_ms: Number(r.lastRenderMs.toFixed(2)), max_render_ms: Number(r.maxRenderMs.toFixed(2)),
  }));
} catch (e) {
  console.error(`[browser] FAILED: ${e && e.stack || e}`);
  code = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
