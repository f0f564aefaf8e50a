// End-to-end test of the admin page in headless Chromium (Debian's /usr/bin/chromium, driven
// by playwright-core): a superuser logs in through the normal login endpoint, finds a user,
// deactivates them (accepting the confirmation), sees it reflected, and the API confirms the
// user can no longer log in. Saves a screenshot.
//
//   node admin.mjs http://127.0.0.1:PORT SUPERUSER USER PASSWORD SCREENSHOT.png
//
// Exits non-zero, with the reason, on any failed expectation.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const [base, superuser, target, password, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error("usage: node admin.mjs BASE_URL SUPERUSER USER PASSWORD SCREENSHOT");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  // Nothing may load from anywhere but the server under test.
  const foreign = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(base)) foreign.push(r.url());
  });
  page.on("pageerror", (e) => failures.push("page error: " + e.message));
  const dialogs = [];
  page.on("dialog", async (d) => {
    dialogs.push(d.message());
    await d.accept();
  });

  await page.goto(base + "/admin/");
  await page.getByLabel("Username", { exact: true }).fill(superuser);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("status").filter({ hasText: "Logged in as " + superuser }).waitFor();
  console.log("clicked: Log in as", superuser);

  await page.getByLabel("Search username or email").fill(target);
  await page.getByRole("button", { name: "Search" }).click();
  const row = page.getByRole("row").filter({ hasText: target + "@example.com" });
  await row.waitFor();
  assert.match(await row.innerText(), /\bactive\b/);
  console.log("clicked: Search for", target);

  await page.getByRole("button", { name: "View " + target }).click();
  await page.getByRole("heading", { name: "User " + target }).waitFor();
  await page.locator("#history").getByRole("cell", { name: "salary" }).waitFor();
  assert.equal(await page.locator("#user-balance").innerText(), "25.00");
  console.log("clicked: View", target);

  await page.getByRole("button", { name: "Deactivate " + target }).click();
  await page.getByRole("status").filter({ hasText: target + " is now inactive." }).waitFor();
  console.log("clicked: Deactivate", target, "and accepted:", dialogs[0]);
  assert.equal(dialogs.length, 1, "one confirmation was asked for");
  assert.equal(await page.locator("#user-active").innerText(), "inactive");
  await page.getByRole("button", { name: "Reactivate " + target }).waitFor();
  await row.filter({ hasText: "inactive" }).waitFor();

  // The audit trail shows the deactivation.
  await page.getByRole("button", { name: "Show recent actions" }).click();
  await page.getByRole("cell", { name: "user.deactivate" }).first().waitFor();
  console.log("clicked: Show recent actions");

  await page.screenshot({ path: screenshot, fullPage: true });
  console.log("screenshot:", screenshot);
  assert.deepEqual(foreign, [], "requests left the server under test");

  // And the API agrees: the user can no longer log in.
  const login = await fetch(base + "/api/auth/v1/login/", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: target, password }),
  });
  assert.equal(login.status, 401, "a deactivated user cannot log in");
  assert.equal((await login.json()).code, "invalid_credentials");
} catch (e) {
  failures.push(e.stack || String(e));
} finally {
  await browser.close();
}
if (failures.length) {
  console.error("admin page e2e FAILED:\n" + failures.join("\n"));
  process.exit(1);
}
console.log("admin page e2e passed");
