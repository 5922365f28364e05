import type { GraphEdge } from "./api";

export function ms(value: number | null): string {
  return value === null ? "-" : `${value < 10 ? value.toFixed(2) : value.toFixed(0)} ms`;
}

export function rps(value: number): string {
  return value < 10 ? value.toFixed(2) : value.toFixed(0);
}

export function percent(value: number): string {
  return `${value.toFixed(value > 0 && value < 1 ? 2 : 0)}%`;
}

/// The label an edge carries in the graph: rate, error share, p99 (Kiali's three).
export function edgeLabel(edge: GraphEdge): string {
  const parts = [`${rps(edge.rps)} rps`, `${percent(edge.errorPercent)} err`, `p99 ${ms(edge.p99Ms)}`];
  return parts.join(" · ");
}

export function flags(flags: Record<string, number>): string {
  const entries = Object.entries(flags);
  return entries.length === 0 ? "-" : entries.map(([flag, n]) => `${flag}×${n}`).join(" ");
}

export function time(unixMs: number): string {
  return new Date(unixMs).toLocaleTimeString();
}
