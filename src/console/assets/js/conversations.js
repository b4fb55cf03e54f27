// Conversations: filters (user, app, agent, state), search by words (with
// the matching snippet), and a transcript. Messages are shown as text,
// never as markup; attachments download through the API; an active
// conversation's transcript follows new messages every 3 s.

import { $, attempt, badge, button, call, el, fill, options, session, table, time } from "./ui.js";

const enc = encodeURIComponent;
let next = null;
let shown = null; // the conversation whose transcript is open
let follow = null;
let before = null; // the transcript's earlier page

export function init() {
  $("conv-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    search(false);
  });
}

export async function show() {
  const [apps, clients] = await Promise.all([
    attempt(() => call("GET", "/apps")),
    attempt(() => call("GET", "/clients")),
  ]);
  if (apps) options($("f-app"), apps.apps.map((a) => [a.appId, a.name]));
  if (clients) options($("f-agent"), clients.clients.map((c) => [c.clientId, c.name]));
  search(false);
}

export function hide() {
  clearInterval(follow);
  follow = null;
}

function query(more) {
  const p = new URLSearchParams();
  const q = $("f-q").value.trim();
  if (q) p.set("q", q);
  if ($("f-user").value.trim()) p.set("userId", $("f-user").value.trim());
  if ($("f-app").value) p.set("appId", $("f-app").value);
  if ($("f-agent").value) p.set("clientId", $("f-agent").value);
  if ($("f-state").value) p.set("state", $("f-state").value);
  p.set("limit", "50");
  if (more && next) p.set("cursor", next);
  return p.toString();
}

async function search(more) {
  const data = await attempt(() => call("GET", "/conversations?" + query(more)));
  if (!data) return;
  next = data.nextCursor;
  const rows = data.conversations.map((c) => [
    el("button", { type: "button", class: "link", onclick: () => open(c) }, c.title || c.id),
    c.userId,
    badge(c.state),
    String(c.messageCount),
    time(c.updatedAt),
    c.match ? el("span", { class: "snippet" }, c.match.snippet) : "",
  ]);
  const list = more ? $("conversations").querySelector("tbody") : null;
  if (list) {
    for (const r of rows) list.append(el("tr", {}, r.map((cell) => el("td", {}, cell))));
  } else {
    fill(
      "conversations",
      table(["Conversation", "User", "State", "Messages", "Last activity", "Match"], rows, "No conversation matches."),
    );
  }
  const old = $("conversations").querySelector(".more");
  if (old) old.remove();
  if (next) $("conversations").append(el("p", { class: "more" }, button("More", () => search(true))));
}

async function open(c) {
  hide();
  shown = c.id;
  before = null;
  const box = $("transcript");
  box.hidden = false;
  fill(
    box,
    el("h3", {}, c.title || c.id),
    el(
      "p",
      { class: "muted" },
      el("code", {}, c.id),
      ` · ${c.userId} · `,
      badge(c.state),
      c.clientId ? ` · agent ${c.clientId}` : " · no agent",
    ),
    el("p", { class: "earlier" }),
    el("ol", { class: "messages", id: "transcript-messages", "aria-label": "Transcript" }),
  );
  await page(c.id, false);
  // Another conversation (or another screen) was chosen meanwhile.
  if (shown !== c.id || $("view-conversations").hidden) return;
  if (c.match) {
    const hit = box.querySelector(`[data-id="${CSS.escape(c.match.messageId)}"]`);
    if (hit) {
      hit.classList.add("hit");
      hit.scrollIntoView({ block: "center" });
    }
  }
  box.scrollIntoView({ block: "nearest" });
  if (c.state === "active") follow = setInterval(() => page(c.id, false), 3000);
}

// The latest page (new messages appended), or the page before the earliest
// shown (`earlier`).
async function page(id, earlier) {
  const p = new URLSearchParams({ limit: "100" });
  if (earlier && before) p.set("before", before);
  const data = await attempt(() => call("GET", `/conversations/${enc(id)}/messages?${p}`));
  if (!data || shown !== id) return;
  const list = $("transcript-messages");
  if (earlier || before === null) {
    before = data.before;
    const more = $("transcript").querySelector(".earlier");
    fill(more, before ? button("Earlier messages", () => page(id, true)) : null);
  }
  const items = data.messages.filter((m) => !list.querySelector(`[data-id="${CSS.escape(m.id)}"]`)).map(item);
  if (earlier) list.prepend(...items);
  else list.append(...items);
}

function item(m) {
  return el(
    "li",
    { class: `msg ${m.direction}`, "data-id": m.id },
    el(
      "div",
      { class: "meta" },
      el("strong", {}, m.direction === "inbound" ? m.from : `agent → ${m.to}`),
      " ",
      time(m.timestamp),
      m.stopped ? el("span", { class: "badge stopped" }, "stopped") : null,
    ),
    el("div", { class: "text" }, m.text),
    m.attachments && m.attachments.length
      ? el(
          "ul",
          { class: "files" },
          m.attachments.map((a) =>
            el("li", {}, button(`${a.name} (${a.mime}, ${a.size} B)`, () => download(a), "small link")),
          ),
        )
      : null,
  );
}

// Downloads through the API with the login's CSRF token (which says the
// console cookie is meant), then saves the bytes.
async function download(a) {
  const res = await fetch(a.url, { headers: { "X-CSRF-Token": session.csrf || "" }, credentials: "same-origin" });
  if (!res.ok) {
    const data = await res.json().catch(() => null);
    $("status").textContent = data && data.error ? data.error.message : `HTTP ${res.status}`;
    return;
  }
  const url = URL.createObjectURL(await res.blob());
  const link = el("a", { href: url, download: a.name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
