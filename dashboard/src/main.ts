// Ferry's dashboard: a hash router over the pages, refreshed every few seconds (proxies
// send summaries every 5 s).

import "./style.css";
import { renderGraph } from "./graph";
import { renderGateways, renderMessages, renderNode, renderProxies } from "./pages";

const REFRESH_MS = 5000;
const page = document.getElementById("page") as HTMLElement;
const status = document.getElementById("status") as HTMLElement;
let shownRoute = "";

async function render(): Promise<void> {
  const hash = location.hash.replace(/^#/, "") || "/graph";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query ?? "");
  if (hash !== shownRoute) {
    page.replaceChildren();
    shownRoute = hash;
  }
  const name = path.split("/")[1] ?? "graph";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.getAttribute("data-page") === name));
  try {
    if (path.startsWith("/node/")) {
      await renderNode(page, decodeURIComponent(path.slice("/node/".length)));
    } else if (name === "gateways") {
      await renderGateways(page);
    } else if (name === "proxies") {
      await renderProxies(page);
    } else if (name === "messages") {
      await renderMessages(page);
    } else {
      await renderGraph(page, params.get("window") ?? "1m");
    }
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.classList.remove("bad-text");
  } catch (error) {
    status.textContent = String(error);
    status.classList.add("bad-text");
  }
}

window.addEventListener("hashchange", () => void render());
void render();
setInterval(() => void render(), REFRESH_MS);
