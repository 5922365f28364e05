// The dashboard's JSON API (docs/dashboard.md), typed as the UI reads it.

export type NodeKind = "gateway" | "workload" | "service" | "unknown";

export interface GraphNode {
  id: string;
  kind: NodeKind;
  namespace: string;
  name: string;
}

export interface GraphEdge {
  id: string;
  source: string;
  target: string;
  requests: number;
  rps: number;
  clientErrors: number;
  serverErrors: number;
  errorPercent: number;
  serverErrorPercent: number;
  p50Ms: number | null;
  p99Ms: number | null;
  mtlsPercent: number;
  flags: Record<string, number>;
  tcpConnections: number;
  tcpBytesPerSecond: number;
}

export interface Graph {
  window: string;
  windowSeconds: number;
  nodes: GraphNode[];
  edges: GraphEdge[];
  droppedEdges: number;
}

export interface ProxyError {
  atUnixMs: number;
  status: number;
  cause: string;
  route?: string;
  source: GraphNode;
  service?: GraphNode;
  workload?: GraphNode;
}

export interface NodePage {
  node: GraphNode;
  inbound: GraphEdge[];
  outbound: GraphEdge[];
  routes: Array<{ object: string; rule: string; listener: number; hosts: string[]; cluster: string; weight: number; weightPercent: number; scope: string }>;
  policies: Array<{ cluster: string; from: string; endpoints: number; upstreamTls: boolean; policy: unknown }>;
  services: string[];
  recentErrors: ProxyError[];
}

export interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}

export interface Finding {
  severity: string;
  code: string;
  reason: string;
  object?: string;
  field?: string;
  message: string;
}

export interface GatewayView {
  api: string;
  namespace: string;
  name: string;
  className?: string;
  listeners?: Array<Record<string, unknown>>;
  servers?: Array<Record<string, unknown>>;
  status?: { conditions?: Condition[]; listeners?: Array<{ name: string; attachedRoutes: number; conditions: Condition[] }> };
  statusSource?: string;
  routes: Array<{ kind: string; namespace: string; name: string; sectionName?: string; conditions?: Condition[]; hosts?: string[] }>;
  messages?: Finding[];
}

export interface ProxyView {
  proxy: string;
  scope: string;
  sync: "SYNCED" | "STALE" | "NACK";
  sentVersion: number;
  ackedVersion: number;
  reasons?: string[];
  lastSummaryUnixMs?: number;
}

export async function get<T>(path: string): Promise<T> {
  const response = await fetch(path, { headers: { accept: "application/json" } });
  if (!response.ok) {
    throw new Error(`${path}: ${response.status} ${(await response.text()).trim()}`);
  }
  return (await response.json()) as T;
}
