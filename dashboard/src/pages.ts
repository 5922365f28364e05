// The pages other than the graph: a node, Gateways, proxies, validation messages.

import { get, type Finding, type GatewayView, type NodePage, type ProxyView } from "./api";
import { badge, conditionBadges, el, nodeLink, table } from "./dom";
import { flags, ms, percent, rps, time } from "./format";

export async function renderNode(root: HTMLElement, id: string): Promise<void> {
  const page = await get<NodePage>(`/api/node?id=${encodeURIComponent(id)}`);
  const edges = (title: string, list: NodePage["inbound"], testId: string) =>
    section(
      title,
      list.length === 0
        ? el("p", { class: "muted" }, "none in the last minute")
        : table(
            ["from", "to", "requests", "req/s", "errors", "p99", "mTLS", "flags"],
            list.map((e) => [nodeLink(e.source), nodeLink(e.target), e.requests, rps(e.rps), percent(e.errorPercent), ms(e.p99Ms), percent(e.mtlsPercent), flags(e.flags)]),
            testId,
          ),
    );
  root.replaceChildren(
    el(
      "div",
      {},
    el("h2", {}, `${page.node.kind} ${page.node.namespace}/${page.node.name}`),
    edges("Inbound", page.inbound, "inbound"),
    edges("Outbound", page.outbound, "outbound"),
    page.services.length ? section("Services", el("p", {}, ...page.services.map((s) => nodeLink(`service/${s}`, s)))) : null,
    section(
      "Routes",
      page.routes.length === 0
        ? el("p", { class: "muted" }, "no route forwards here")
        : table(
            ["object", "rule", "listener", "hosts", "cluster", "weight", "scope"],
            page.routes.map((r) => [r.object, r.rule, r.listener, r.hosts.join(", "), r.cluster, `${r.weight} (${r.weightPercent}%)`, r.scope]),
            "routes",
          ),
    ),
    section(
      "Traffic policies",
      page.policies.length === 0
        ? el("p", { class: "muted" }, "none")
        : table(
            ["cluster", "from", "endpoints", "TLS to upstream", "policy"],
            page.policies.map((p) => [p.cluster, p.from, p.endpoints, p.upstreamTls ? "yes" : "no", el("code", {}, JSON.stringify(p.policy))]),
            "policies",
          ),
    ),
    section(
      "Recent errors written by proxies",
      page.recentErrors.length === 0
        ? el("p", { class: "muted" }, "none")
        : table(
            ["time", "status", "x-ferry-cause", "route"],
            page.recentErrors.map((e) => [time(e.atUnixMs), e.status, el("code", {}, e.cause), e.route ?? "-"]),
            "errors",
          ),
    ),
    ),
  );
}

export async function renderGateways(root: HTMLElement): Promise<void> {
  const { gateways } = await get<{ gateways: GatewayView[] }>("/api/gateways");
  const cards = gateways.map((g) => {
    const listeners = g.listeners
      ? table(
          ["listener", "port", "protocol", "hostname", "attached routes", "conditions"],
          g.listeners.map((l) => {
            const status = g.status?.listeners?.find((s) => s.name === l.name);
            return [String(l.name), String(l.port), String(l.protocol), String(l.hostname ?? "*"), status?.attachedRoutes ?? "-", conditionBadges(status?.conditions)];
          }),
          "listeners",
        )
      : table(
          ["server", "port", "protocol", "hosts"],
          (g.servers ?? []).map((s) => {
            const port = s.port as Record<string, unknown>;
            return [String(s.name ?? "-"), String(port.number), String(port.protocol), ((s.hosts as string[]) ?? []).join(", ")];
          }),
          "servers",
        );
    const routes = table(
      ["route", "section", "conditions"],
      g.routes.map((r) => [`${r.kind} ${r.namespace}/${r.name}`, r.sectionName ?? (r.hosts ?? []).join(", "), conditionBadges(r.conditions)]),
      "attached-routes",
    );
    return el(
      "section",
      { class: "card", "data-testid": "gateway" },
      el("h3", {}, `Gateway ${g.namespace}/${g.name}`, " ", badge(g.api, "api")),
      g.status ? el("p", {}, conditionBadges(g.status.conditions), " ", el("span", { class: "muted" }, `(${g.statusSource})`)) : null,
      listeners,
      el("h4", {}, "Routes"),
      g.routes.length ? routes : el("p", { class: "muted" }, "none attached"),
      g.messages?.length ? findingsTable(g.messages) : null,
    );
  });
  root.replaceChildren(el("h2", {}, "Gateways"), ...(cards.length ? cards : [el("p", { class: "muted" }, "No Gateways.")]));
}

export async function renderProxies(root: HTMLElement): Promise<void> {
  const { proxies } = await get<{ proxies: ProxyView[] }>("/api/proxies");
  root.replaceChildren(
    el("h2", {}, "Proxies"),
    table(
      ["proxy", "scope", "sync", "sent", "acked", "last summary", "reasons"],
      proxies.map((p) => [
        p.proxy,
        p.scope,
        badge(p.sync, p.sync === "SYNCED" ? "ok" : "bad"),
        p.sentVersion,
        p.ackedVersion,
        p.lastSummaryUnixMs ? time(p.lastSummaryUnixMs) : "-",
        (p.reasons ?? []).join("; "),
      ]),
      "proxies",
    ),
  );
}

export async function renderMessages(root: HTMLElement): Promise<void> {
  const data = await get<{ errors: number; warnings: number; messages: Finding[] }>("/api/messages");
  root.replaceChildren(
    el("h2", {}, "Validation messages"),
    el("p", {}, `${data.errors} errors, ${data.warnings} warnings (what ferry analyze prints).`),
    data.messages.length ? findingsTable(data.messages) : el("p", { class: "muted" }, "Nothing to report."),
  );
}

function findingsTable(findings: Finding[]): HTMLElement {
  return table(
    ["severity", "code", "object", "field", "message"],
    findings.map((f) => [badge(f.severity, f.severity === "Error" ? "bad" : "warn"), f.code, f.object ?? "-", f.field ?? "-", f.message]),
    "messages",
  );
}

function section(title: string, body: Node): HTMLElement {
  return el("section", {}, el("h3", {}, title), body);
}
