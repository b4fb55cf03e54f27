// Deliveries: dead letters (the messages no agent acknowledged within their
// attempts) by default, or any state; requeue one, or a selection, so that
// they are delivered again.

import { $, ago, attempt, badge, button, call, el, fill, table } from "./ui.js";

const enc = encodeURIComponent;
let rows = [];

export function init() {
  $("dl-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  $("requeue-selected").addEventListener("click", async () => {
    const ids = [...document.querySelectorAll("#deliveries input[type=checkbox]:checked")].map((c) => c.value);
    let done = 0;
    for (const id of ids) {
      if (await attempt(() => call("POST", `/deliveries/${enc(id)}/requeue`))) done += 1;
    }
    await load();
    if (done) $("status").textContent = `${done} of ${ids.length} requeued.`;
  });
}

export function show() {
  load();
}

function why(d) {
  if (d.state !== "dead") return "";
  return `not acknowledged within ${d.attempts} attempt${d.attempts === 1 ? "" : "s"} (last ${ago(d.updatedAt)})`;
}

function selectionChanged() {
  const any = document.querySelector("#deliveries input[type=checkbox]:checked");
  $("requeue-selected").disabled = !any;
}

async function load() {
  const state = $("dl-state").value;
  const [data, clients] = await Promise.all([
    attempt(() => call("GET", `/deliveries?limit=200${state ? "&state=" + state : ""}`)),
    attempt(() => call("GET", "/clients")),
  ]);
  if (!data) return;
  const names = new Map((clients ? clients.clients : []).map((c) => [c.clientId, c.name]));
  rows = data.deliveries;
  fill(
    "deliveries",
    table(
      ["", "Message", "Agent", "State", "Attempts", "Last error", "Created", ""],
      rows.map((d) => [
        d.state === "dead"
          ? el("input", { type: "checkbox", value: d.messageId, "aria-label": `Select ${d.messageId}`, onchange: selectionChanged })
          : "",
        el("div", {}, el("div", { class: "text clip" }, d.message.text), el("code", { class: "muted" }, d.messageId)),
        d.clientId ? el("span", { title: d.clientId }, names.get(d.clientId) || d.clientId) : "–",
        badge(d.state),
        String(d.attempts),
        why(d),
        ago(d.createdAt),
        d.state === "dead" ? button("Requeue", () => requeue(d)) : "",
      ]),
      state === "dead" ? "No dead letters." : "No deliveries.",
    ),
  );
  selectionChanged();
}

async function requeue(d) {
  if (await attempt(() => call("POST", `/deliveries/${enc(d.messageId)}/requeue`))) {
    await load();
    $("status").textContent = `${d.messageId} requeued.`;
  }
}
