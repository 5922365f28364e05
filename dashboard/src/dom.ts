// Builds DOM nodes from data. Text always goes in as text (names, hosts and causes may come
// from clients), never as HTML.

type Child = Node | string | number | null | undefined | false;

export function el(tag: string, attrs: Record<string, string> = {}, ...children: Child[]): HTMLElement {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function table(headers: string[], rows: Child[][], testId: string): HTMLElement {
  return el(
    "table",
    { "data-testid": testId },
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))))),
  );
}

export function nodeLink(id: string, label?: string): HTMLElement {
  return el("a", { href: `#/node/${encodeURIComponent(id)}` }, label ?? id);
}

export function badge(text: string, kind: string): HTMLElement {
  return el("span", { class: `badge ${kind}` }, text);
}

export function conditionBadges(conditions: Array<{ type: string; status: string; reason?: string; message?: string }> = []): HTMLElement {
  return el(
    "span",
    {},
    ...conditions.map((c) => {
      const b = badge(`${c.type}=${c.status}${c.reason ? ` (${c.reason})` : ""}`, c.status === "True" ? "ok" : "bad");
      if (c.message) b.title = c.message;
      return b;
    }),
  );
}
