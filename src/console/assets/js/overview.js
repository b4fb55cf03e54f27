// The first screen: agents by state, queues, dead letters, webhook backlog,
// messages per minute over the last hour (the relay's own counters), the
// database's size and the version. Read again every 5 s while shown.

import { ago, attempt, badge, bytes, call, el, fill, table } from "./ui.js";

const SVG = "http://www.w3.org/2000/svg";
let timer = null;

export function show() {
  load();
  clearInterval(timer);
  timer = setInterval(load, 5000);
}

export function hide() {
  clearInterval(timer);
  timer = null;
}

function tile(label, value, cls, href) {
  const body = [el("span", { class: "value" }, String(value)), el("span", { class: "label" }, label)];
  return href ? el("a", { class: `tile ${cls || ""}`, href }, body) : el("div", { class: `tile ${cls || ""}` }, body);
}

async function load() {
  if (document.hidden) return; // a tab in the background reads nothing
  const o = await attempt(() => call("GET", "/admin/overview"));
  if (!o) return;
  const backlog = o.webhookBacklog.reduce((n, w) => n + w.pending, 0);
  fill(
    "tiles",
    tile("agents connected", o.connected, "ok", "#agents"),
    tile("stale", o.stale, o.stale ? "warn" : "", "#agents"),
    tile("gone", o.gone, o.gone ? "bad" : "", "#agents"),
    tile("active conversations", o.activeConversations, "", "#conversations"),
    tile("dead letters", o.deadLetters, o.deadLetters ? "bad" : "", "#deliveries"),
    tile("webhook backlog", backlog, backlog ? "warn" : "", "#apps"),
    tile("database", bytes(o.databaseBytes)),
    tile("write-ahead log", bytes(o.walBytes)),
    tile(`version, on ${o.backend === "sqlite" ? "SQLite" : "PostgreSQL"}`, o.version),
  );
  chart(o.messagesPerMinute);
  fill(
    "queues",
    table(
      ["Agent", "State", "Pending", "Oldest pending", "Last seen"],
      o.agents.map((a) => [
        el("span", { title: a.clientId }, a.name),
        badge(a.state),
        String(a.pending),
        a.oldestPendingAt ? ago(a.oldestPendingAt) : "–",
        ago(a.lastSeenAt),
      ]),
      "No agents yet: create one under Agents.",
    ),
  );
  fill(
    "backlog",
    table(
      ["Webhook", "Waiting", "Oldest"],
      o.webhookBacklog.map((w) => [w.webhookId, String(w.pending), ago(w.oldestAt)]),
      "No webhook events waiting.",
    ),
  );
}

// 60 bars, one per minute, oldest on the left; drawn with SVG elements
// (attributes, not inline styles: the page's policy allows none), stretched
// to the card's width, the time axis' labels below it in HTML.
function chart(counts) {
  const w = 600;
  const h = 100;
  const max = Math.max(1, ...counts);
  const bar = w / counts.length;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const total = counts.reduce((a, b) => a + b, 0);
  const peak = Math.max(...counts);
  svg.setAttribute(
    "aria-label",
    `Messages per minute over the last hour: ${total} in all, at most ${peak} in a minute, ${counts[counts.length - 1]} this minute`,
  );
  counts.forEach((n, i) => {
    const r = document.createElementNS(SVG, "rect");
    const height = n ? Math.max(2, (n / max) * (h - 2)) : 0;
    r.setAttribute("x", String(i * bar + 1));
    r.setAttribute("y", String(h - height));
    r.setAttribute("width", String(Math.max(1, bar - 2)));
    r.setAttribute("height", String(height));
    r.setAttribute("class", "bar");
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${counts.length - i - 1} min ago: ${n}`;
    r.append(title);
    svg.append(r);
  });
  const axis = el("div", { class: "axis" }, el("span", {}, "60 min ago"), el("span", {}, "now"));
  const summary = el("p", { class: "muted" }, `${total} messages in the last hour; at most ${peak} in a minute.`);
  fill("chart", svg, axis, summary);
}
