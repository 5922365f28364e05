// The service graph: Cytoscape draws the nodes and labelled edges; a table beside it lists
// the same numbers (readable, selectable, and what a test can check without a canvas).

import cytoscape from "cytoscape";
import { get, type Graph, type GraphEdge } from "./api";
import { el, nodeLink, table } from "./dom";
import { edgeLabel, flags, ms, percent, rps, tcp } from "./format";

const STYLE: cytoscape.StylesheetJson = [
  {
    selector: "node",
    style: {
      label: "data(label)",
      "font-size": 11,
      "text-wrap": "wrap",
      "text-valign": "bottom",
      "text-margin-y": 4,
      "background-color": "#4caf50",
      width: 26,
      height: 26,
    },
  },
  { selector: 'node[kind = "gateway"]', style: { shape: "round-diamond", "background-color": "#7e57c2", width: 34, height: 34 } },
  { selector: 'node[kind = "service"]', style: { shape: "round-triangle", "background-color": "#1e88e5" } },
  { selector: 'node[kind = "unknown"]', style: { "background-color": "#9e9e9e" } },
  {
    selector: "edge",
    style: {
      label: "data(label)",
      "font-size": 9,
      "text-background-color": "#fff",
      "text-background-opacity": 0.85,
      "text-background-padding": "2px",
      "curve-style": "bezier",
      "target-arrow-shape": "triangle",
      width: 2,
      "line-color": "#78909c",
      "target-arrow-color": "#78909c",
      "line-style": "dashed",
    },
  },
  // Solid: every request of the edge went over the mesh's mutual TLS.
  { selector: "edge[mtls = 1]", style: { "line-style": "solid" } },
  { selector: "edge[health = 'degraded']", style: { "line-color": "#fb8c00", "target-arrow-color": "#fb8c00" } },
  { selector: "edge[health = 'failing']", style: { "line-color": "#e53935", "target-arrow-color": "#e53935" } },
];

/// Kiali's thresholds: over 0.1% errors degraded, over 20% failing.
function health(edge: GraphEdge): string {
  if (edge.errorPercent > 20) return "failing";
  if (edge.errorPercent > 0.1) return "degraded";
  return "healthy";
}

let cy: cytoscape.Core | null = null;

declare global {
  interface Window {
    // For tests and the curious: what the graph shows now.
    ferryGraph?: { nodes: string[]; edges: Array<{ id: string; label: string }> };
  }
}

export async function renderGraph(root: HTMLElement, window_: string): Promise<void> {
  const graph = await get<Graph>(`/api/graph?window=${encodeURIComponent(window_)}`);
  const canvas = root.querySelector<HTMLElement>("#graph-canvas") ?? layoutPage(root, window_);
  draw(canvas, graph);
  const list = root.querySelector("#graph-edges");
  list?.replaceChildren(edgeTable(graph));
}

function layoutPage(root: HTMLElement, window_: string): HTMLElement {
  const picker = el(
    "select",
    { id: "window", "aria-label": "window" },
    el("option", { value: "1m" }, "last minute"),
    el("option", { value: "10m" }, "last 10 minutes"),
  ) as HTMLSelectElement;
  picker.value = window_;
  picker.addEventListener("change", () => {
    location.hash = `#/graph?window=${picker.value}`;
  });
  const canvas = el("div", { id: "graph-canvas" });
  root.replaceChildren(
    el(
      "div",
      { class: "toolbar" },
      el("h2", {}, "Service graph"),
      picker,
      el("span", { class: "muted legend" }, "solid edge: mTLS · dashed: plaintext · orange/red: errors"),
    ),
    canvas,
    el("div", { id: "graph-edges" }),
  );
  cy = null;
  return canvas;
}

function draw(container: HTMLElement, graph: Graph): void {
  const elements: cytoscape.ElementDefinition[] = [
    ...graph.nodes.map((n) => ({
      data: { id: n.id, kind: n.kind, label: n.kind === "unknown" ? n.name : `${n.name}\n${n.namespace}` },
    })),
    ...graph.edges.map((e) => ({
      data: {
        id: e.id,
        source: e.source,
        target: e.target,
        label: edgeLabel(e),
        mtls: e.mtlsPercent >= 100 ? 1 : 0,
        health: health(e),
      },
    })),
  ];
  const shown = elements.map((e) => e.data.id).sort().join(",");
  if (cy && cy.data("shown") === shown) {
    // Same nodes and edges: update the numbers in place, keep the layout.
    for (const e of graph.edges) {
      cy.getElementById(e.id).data({ label: edgeLabel(e), mtls: e.mtlsPercent >= 100 ? 1 : 0, health: health(e) });
    }
  } else {
    cy?.destroy();
    cy = cytoscape({ container, elements, style: STYLE, wheelSensitivity: 0.3 });
    cy.data("shown", shown);
    const roots = graph.nodes.filter((n) => n.kind === "gateway" || n.kind === "unknown").map((n) => n.id);
    cy.layout({ name: "breadthfirst", directed: true, roots: roots.length ? roots : undefined, spacingFactor: 1.4, padding: 30 }).run();
    cy.on("tap", "node", (event) => {
      location.hash = `#/node/${encodeURIComponent(event.target.id())}`;
    });
  }
  window.ferryGraph = {
    nodes: graph.nodes.map((n) => n.id),
    edges: graph.edges.map((e) => ({ id: e.id, label: edgeLabel(e) })),
  };
}

function edgeTable(graph: Graph): HTMLElement {
  if (graph.edges.length === 0) {
    return el("p", { class: "muted", "data-testid": "no-traffic" }, `No traffic in the last ${graph.window}.`);
  }
  const rows = graph.edges.map((e) => [
    nodeLink(e.source),
    nodeLink(e.target),
    e.requests,
    rps(e.rps),
    percent(e.errorPercent),
    ms(e.p50Ms),
    ms(e.p99Ms),
    percent(e.mtlsPercent),
    flags(e.flags),
    tcp(e),
  ]);
  const dropped = graph.droppedEdges > 0 ? el("p", { class: "warn" }, `${graph.droppedEdges} edges over the limit were not kept.`) : null;
  return el(
    "div",
    {},
    table(["from", "to", "requests", "req/s", "errors", "p50", "p99", "mTLS", "flags", "TCP"], rows, "edges"),
    dropped,
  );
}
