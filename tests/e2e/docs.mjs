// The documentation pages in headless Chromium with no network beyond the server under test:
// Swagger UI (/api/docs/) and ReDoc (/api/redoc/) must each render the API's title and every
// operation of the OpenAPI document, and request nothing from anywhere else. Saves screenshots.
//
//   node docs.mjs http://127.0.0.1:PORT OUT_DIR

import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const [base, outDir] = process.argv.slice(2);
if (!outDir) {
  console.error("usage: node docs.mjs BASE_URL OUT_DIR");
  process.exit(2);
}
const schema = await (await fetch(base + "/api/schema/")).json();
const operations = [];
for (const [path, item] of Object.entries(schema.paths)) {
  for (const [method, op] of Object.entries(item)) operations.push({ path, method, summary: op.summary });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const failures = [];
try {
  for (const ui of ["swagger", "redoc"]) {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const foreign = [];
    page.on("request", (r) => {
      const url = r.url();
      if (!url.startsWith(base) && !url.startsWith("data:") && !url.startsWith("blob:")) foreign.push(url);
    });
    page.on("pageerror", (e) => failures.push(`${ui}: page error: ${e.message}`));
    if (ui === "swagger") {
      await page.goto(base + "/api/docs/");
      await page.getByRole("heading", { name: /LightTech API/ }).first().waitFor({ timeout: 20000 });
      await page.locator(".opblock").first().waitFor();
      const shown = await page.locator(".opblock").count();
      assert.equal(shown, operations.length, "Swagger UI shows every operation");
    } else {
      await page.goto(base + "/api/redoc/");
      await page.getByRole("heading", { name: /LightTech API/ }).first().waitFor({ timeout: 20000 });
      const menu = await page.locator("[role=menuitem] label").allInnerTexts();
      for (const op of operations) {
        assert.ok(menu.some((t) => t.includes(op.summary)), `ReDoc lists "${op.summary}"`);
      }
    }
    const shot = `${outDir}/${ui}.png`;
    await page.screenshot({ path: shot });
    console.log(`${ui}: title and ${operations.length} operations rendered; screenshot ${shot}`);
    assert.deepEqual(foreign, [], `${ui} requested something beyond the server under test`);
    await page.close();
  }
} catch (e) {
  failures.push(e.stack || String(e));
} finally {
  await browser.close();
}
if (failures.length) {
  console.error("docs pages e2e FAILED:\n" + failures.join("\n"));
  process.exit(1);
}
console.log("docs pages e2e passed");
