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
  if (edge.requests === 0) {
    // A TCP edge: connections and throughput (no requests, statuses or latencies to show).
    return [`${edge.tcpConnections} conn`, `${bytes(edge.tcpBytesPerSecond)}/s`, `${percent(edge.errorPercent)} err`].join(" · ");
  }
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

export function bytes(value: number): string {
  const units = ["B", "KB", "MB", "GB"];
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : value.toFixed(0)} ${units[unit]}`;
}

/// TCP connections and throughput of an edge, or "-" for an HTTP-only one.
export function tcp(edge: GraphEdge): string {
  return edge.tcpConnections === 0 ? "-" : `${edge.tcpConnections} conn, ${bytes(edge.tcpBytesPerSecond)}/s`;
}
