// What the console's screens share: the login's CSRF token and the API
// helper that sends it, an element builder that only ever sets text (the
// page makes no HTML from strings), tables, times, the confirmation dialog
// and the box that shows a secret once.

export const $ = (id) => document.getElementById(id);

export const session = { csrf: null, deadline: 0, lifetime: 0, onEnded: null };

// Calls the admin API with the login cookie. Answers { res, data }; a
// login that ended takes the page back to the login form.
export async function api(method, path, body) {
  const headers = { "X-CSRF-Token": session.csrf || "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = null;
  try {
    data = await res.json();
  } catch (_) {
    data = null;
  }
  if (res.status === 401 && session.onEnded) session.onEnded();
  return { res, data };
}

// The error a login that ended raises: the login form says it already.
class Ended extends Error {}

// The API's answer, or an Error carrying its message.
export async function call(method, path, body) {
  const { res, data } = await api(method, path, body);
  if (res.status === 401) throw new Ended("the login ended");
  if (!res.ok) {
    const e = data && data.error;
    throw new Error(e ? `${e.message} (${e.code})` : `HTTP ${res.status}`);
  }
  return data;
}

// <tag class=...> with children: strings become text nodes.
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// A table: `head` the column names, `rows` arrays of cells (text or nodes).
export function table(head, rows, empty) {
  if (!rows.length) return el("p", { class: "empty" }, empty || "Nothing here.");
  // Focusable: a table wider than a phone scrolls by keyboard too.
  return el(
    "div",
    { class: "scroll", tabindex: 0 },
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))),
    ),
  );
}

export function fill(id, ...children) {
  const node = typeof id === "string" ? $(id) : id;
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

export function time(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  return el("time", { datetime: d.toISOString(), title: d.toLocaleString() }, d.toLocaleString());
}

export function ago(ms) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

export function badge(state) {
  return el("span", { class: `badge ${state}` }, state);
}

export function button(label, onclick, cls) {
  return el("button", { type: "button", class: cls || "small", onclick }, label);
}

export function status(text, error) {
  const s = $("status");
  s.textContent = text || "";
  s.classList.toggle("error", !!error);
}

// Runs `fn`, showing its error in the status line.
export async function attempt(fn) {
  try {
    status("");
    return await fn();
  } catch (e) {
    if (!(e instanceof Ended)) status(e.message, true);
    return undefined;
  }
}

// Asks before something that cannot be undone; resolves true on Confirm.
export function confirmAction(text, label) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = label || "Confirm";
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

// A secret shown this once (a new token, password or signing secret),
// with a copy button, in element `where`.
export function showSecret(where, title, value, note) {
  const out = el("output", { class: "secret-value", "aria-label": title }, value);
  const copy = button(
    "Copy",
    async () => {
      try {
        await navigator.clipboard.writeText(value);
        copy.textContent = "Copied";
      } catch (_) {
        const range = document.createRange();
        range.selectNodeContents(out);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        copy.textContent = "Selected: copy it now";
      }
    },
    "small",
  );
  const close = button("I have stored it", () => fill(where), "small secondary");
  fill(
    where,
    el(
      "div",
      { class: "card secret", role: "region", "aria-label": title },
      el("strong", {}, title),
      el("p", {}, note || "Shown only now: the relay keeps only its hash."),
      el("div", { class: "secret-row" }, out, copy),
      close,
    ),
  );
}

// Options of a <select> from (value, label) pairs, keeping the choice.
export function options(select, pairs, first) {
  const chosen = select.value;
  fill(select, el("option", { value: "" }, first || "any"), pairs.map(([v, l]) => el("option", { value: v }, l)));
  select.value = chosen;
}
