// Drives the dashboard in Debian's Chromium (playwright-core; Playwright's own browser
// download is not used) and prints, as JSON, what each page shows: the Rust test
// (tests/dashboard.rs) checks it against the traffic it sent. Saves a screenshot of the graph.
//
//   node tests/ui.mjs http://127.0.0.1:20001 graph.png [node-id]

import { chromium } from "playwright-core";

const [base, screenshot, nodeId = "service/weather/weather"] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node tests/ui.mjs BASE_URL SCREENSHOT.png [NODE_ID]");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
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
const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
const problems = [];
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
page.on("console", (message) => {
  if (message.type() === "error") problems.push(`console: ${message.text()}`);
});

const rows = (testId) =>
  page.$$eval(`[data-testid="${testId}"] tbody tr`, (trs) =>
    trs.map((tr) => Array.from(tr.querySelectorAll("td"), (td) => td.textContent.trim())),
  );

try {
  await page.goto(`${base}/#/graph?window=1m`);
  await page.waitForSelector('[data-testid="edges"] tbody tr', { timeout: 15000 });
  await page.waitForFunction(() => window.ferryGraph && window.ferryGraph.edges.length > 0);
  // Let the layout settle before the picture.
  await page.waitForTimeout(500);
  const graph = await page.evaluate(() => window.ferryGraph);
  const edges = await rows("edges");
  await page.screenshot({ path: screenshot });

  await page.goto(`${base}/#/node/${encodeURIComponent(nodeId)}`);
  await page.waitForSelector("h2");
  await page.waitForFunction(() => document.querySelector("h2")?.textContent?.includes("/"));
  const node = {
    title: await page.textContent("h2"),
    outbound: await rows("outbound"),
    routes: await rows("routes"),
    policies: await rows("policies"),
    errors: await rows("errors"),
  };

  await page.goto(`${base}/#/gateways`);
  await page.waitForSelector('[data-testid="gateway"]');
  const gateways = await page.$$eval('[data-testid="gateway"]', (cards) => cards.map((c) => c.textContent));

  await page.goto(`${base}/#/proxies`);
  await page.waitForSelector('[data-testid="proxies"] tbody tr');
  const proxies = await rows("proxies");

  await page.goto(`${base}/#/messages`);
  await page.waitForFunction(() => document.querySelector("main p")?.textContent?.includes("errors"));
  const messages = await page.textContent("main");

  console.log(JSON.stringify({ graph, edges, node, gateways, proxies, messages, problems }, null, 2));
} finally {
  await browser.close();
}
