// How messages are shown. An agent's stored message comes with `html`, its
// Markdown rendered and sanitized by the relay (src/webchat/markdown.rs).
// That is the only HTML this page ever inserts, through the one Trusted
// Types policy below; the page's Content-Security-Policy requires Trusted
// Types, so no other string can reach innerHTML. Everything else (the
// user's own messages, a reply while it streams) is set with textContent.
//
// A message's files are fetched with the page's credentials and shown from
// blob: URLs: the image types the relay serves inline as images, anything
// else as a link that saves the file.

import { $, INLINE, state } from "./state.js";
import { t } from "./i18n.js";
import { authHeaders } from "./session.js";
import { hiddenFor, refreshListSoon } from "./conversations.js";
import { agentActive, setActivity, working } from "./activity.js";

const markdownPolicy = window.trustedTypes
  ? window.trustedTypes.createPolicy("clawrelay-markdown", { createHTML: (html) => html })
  : { createHTML: (html) => html };

export function nearBottom() {
  const list = $("messages");
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

// Adds `node` at the end of the list, keeping the view at the bottom if it
// was there.
export function append(node) {
  const list = $("messages");
  const stick = nearBottom();
  list.appendChild(node);
  if (stick) list.scrollTop = list.scrollHeight;
}

export function bubble(direction, text) {
  const li = document.createElement("li");
  li.className = "msg " + direction;
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = text;
  const meta = document.createElement("span");
  meta.className = "meta";
  li.append(body, meta);
  return li;
}

export function sizeText(n) {
  if (n < 1024) return n + " B";
  if (n < 1048576) return Math.round(n / 1024) + " KB";
  return (n / 1048576).toFixed(1) + " MB";
}

// The bytes of an attachment, with this page's credentials, as a blob: URL.
async function blobUrl(a) {
  const res = await fetch(a.url, { headers: authHeaders(), credentials: "same-origin" });
  if (!res.ok) throw new Error("HTTP " + res.status);
  return URL.createObjectURL(await res.blob());
}

export function showFiles(li, attachments) {
  if (!attachments || !attachments.length || li.querySelector(".files")) return;
  const box = document.createElement("span");
  box.className = "files";
  for (const a of attachments) {
    if (INLINE.includes(a.mime)) {
      const img = document.createElement("img");
      img.alt = a.name;
      box.appendChild(img);
      blobUrl(a).then((u) => (img.src = u), () => (img.alt = a.name + " (could not be loaded)"));
    } else {
      const link = document.createElement("a");
      link.href = "#";
      link.textContent = a.name + " (" + sizeText(a.size) + ")";
      link.addEventListener("click", async (e) => {
        e.preventDefault();
        const save = document.createElement("a");
        save.href = await blobUrl(a);
        save.download = a.name;
        save.click();
      });
      box.appendChild(link);
    }
  }
  li.insertBefore(box, li.querySelector(".meta"));
}

// A message's body: the relay's rendering of an agent's Markdown when it
// sent one, else the text as typed.
function setBody(li, m) {
  const body = li.querySelector(".body");
  if (typeof m.html === "string") {
    body.innerHTML = markdownPolicy.createHTML(m.html);
    li.classList.add("md");
    decorateCode(body);
  } else {
    body.textContent = m.text;
  }
}

// Each code block gets a bar with its language and a copy button.
function decorateCode(body) {
  for (const pre of body.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    const bar = document.createElement("div");
    bar.className = "codebar";
    const lang = document.createElement("span");
    lang.textContent = (code && code.dataset.lang) || t("code");
    const copy = copyButton("copy", () => (code ? code.textContent : pre.textContent));
    bar.append(lang, copy);
    pre.before(bar);
  }
}

export function setMeta(li, text) {
  li.querySelector(".meta").textContent = text;
}

function timeOf(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// "just now", "5 min ago", "14:02", "Yesterday 14:02", "3 Dec 14:02".
export function relative(ms) {
  const now = Date.now();
  const age = now - ms;
  if (age < 60000) return t("just_now");
  if (age < 3600000) return t("min_ago", Math.floor(age / 60000));
  const then = new Date(ms);
  const today = new Date(now);
  const dayStart = new Date(today.getFullYear(), today.getMonth(), today.getDate()).getTime();
  if (ms >= dayStart) return timeOf(ms);
  if (ms >= dayStart - 86400000) return t("yesterday", timeOf(ms));
  return then.toLocaleDateString([], { day: "numeric", month: "short" }) + " " + timeOf(ms);
}

// A stored message's meta line: when, relative, with the exact time on
// hover; a stopped reply says so; an agent's message also gets a button
// that copies its text.
export function setStored(li, m) {
  const meta = li.querySelector(".meta");
  const when = document.createElement("time");
  when.dateTime = new Date(m.timestamp).toISOString();
  when.dataset.ms = String(m.timestamp);
  when.title = new Date(m.timestamp).toLocaleString();
  when.textContent = relative(m.timestamp);
  meta.replaceChildren(when);
  if (m.stopped) {
    li.classList.add("stopped");
    const tag = document.createElement("span");
    tag.className = "stopped-tag";
    tag.textContent = t("stopped");
    meta.prepend(tag);
  }
  if (m.direction === "outbound") {
    const copy = copyButton("copy-msg", () => m.text);
    copy.setAttribute("aria-label", t("copy_message"));
    meta.appendChild(copy);
  }
}

// A Copy button that copies `text()` and says how it went for two
// seconds. (No data-i18n: in a message body only the sanitizer's
// attributes appear; relabel() renames these buttons itself.)
function copyButton(className, text) {
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = className;
  copy.textContent = t("copy");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text());
      copy.textContent = t("copied");
    } catch (_) {
      copy.textContent = t("copy_failed");
    }
    setTimeout(() => (copy.textContent = t("copy")), 2000);
  });
  return copy;
}

// Rewrites, in the language now chosen, what the scripts wrote into
// messages.
export function relabel() {
  for (const b of document.querySelectorAll("#messages .copy, #messages .copy-msg")) b.textContent = t("copy");
  for (const b of document.querySelectorAll("#messages .copy-msg")) b.setAttribute("aria-label", t("copy_message"));
  for (const s of document.querySelectorAll("#messages .stopped-tag")) s.textContent = t("stopped");
  refreshTimes();
}

// Relative times age: updated in place (the list is not rebuilt, so a
// focused item keeps its focus).
export function refreshTimes() {
  for (const el of document.querySelectorAll("#messages time[data-ms], #conv-list .conv-when")) {
    el.textContent = relative(Number(el.dataset.ms)) + (el.dataset.ended ? " · " + t("ended") : "");
  }
}

export function addDivider(text, conv) {
  const li = document.createElement("li");
  li.className = "divider";
  li.textContent = text;
  li.dataset.conv = conv || "";
  li.hidden = hiddenFor(conv);
  append(li);
}

// Shows stored message `m`: at the end, or before `before` (a page of
// history).
export function addMessage(m, before) {
  if (state.byId.has(m.id)) return;
  if (!state.convs.some((c) => c.id === m.conversationId)) refreshListSoon();
  let li = m.replyId ? state.streaming.get(m.replyId) : null;
  if (li) {
    // The streamed reply settles into the stored one, in place.
    // At the bottom it stays there; above, what the reader sees stays put
    // (the reply is the last message: only what is below it grows).
    state.streaming.delete(m.replyId);
    li.classList.remove("streaming");
    const stick = nearBottom();
    setBody(li, m);
    if (stick) $("messages").scrollTop = $("messages").scrollHeight;
  } else {
    li = bubble(m.direction, m.text);
    setBody(li, m);
    if (before) $("messages").insertBefore(li, before);
    else append(li);
  }
  if (m.replyId) state.settled.add(m.replyId);
  // A new reply ends what the agent was doing for it.
  if (m.direction === "outbound" && !before) {
    agentActive();
    working(m.conversationId, false);
    if (!hiddenFor(m.conversationId)) setActivity(null);
  }
  showFiles(li, m.attachments);
  li.dataset.id = m.id;
  li.dataset.conv = m.conversationId;
  li.hidden = hiddenFor(m.conversationId);
  setStored(li, m);
  state.byId.set(m.id, li);
}

// A piece of a reply being written, shown as text until the reply settles.
export function addDelta(p) {
  if (state.settled.has(p.replyId)) return;
  let li = state.streaming.get(p.replyId);
  if (!li) {
    li = bubble("outbound", "");
    li.classList.add("streaming");
    li.dataset.replyId = p.replyId;
    li.dataset.conv = p.conversationId;
    li.hidden = hiddenFor(p.conversationId);
    state.streaming.set(p.replyId, li);
    append(li);
    setActivity(null);
  }
  const stick = nearBottom();
  li.querySelector(".body").textContent += p.text;
  if (stick) $("messages").scrollTop = $("messages").scrollHeight;
}

// A reply being written that will not be stored: it goes.
export function dropStreaming(replyId) {
  state.settled.add(replyId);
  const li = state.streaming.get(replyId);
  if (!li) return;
  state.streaming.delete(replyId);
  li.remove();
}
