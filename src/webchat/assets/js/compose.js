// Writing and sending: the composer, files picked, dropped or pasted
// (uploaded with POST /attachments when the message is sent, then listed
// in its `attachments`), and POST /inbound with an Idempotency-Key, so that
// a retry never stores a message twice.

import { $, state } from "./state.js";
import { t } from "./i18n.js";
import { api, authHeaders, errorText, sessionEnded } from "./session.js";
import { refreshListSoon, select } from "./conversations.js";
import { append, bubble, setMeta, setStored, showFiles, sizeText } from "./render.js";
import { waitForAgent, working } from "./activity.js";

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// Uploads the files of an outgoing message not uploaded yet (a retry
// keeps what went up before); answers undefined when all are up, null when
// the session ended, else what went wrong.
async function uploadAll(out) {
  for (const f of out.files) {
    if (f.id) continue;
    let res, data;
    try {
      res = await fetch("/attachments", {
        method: "POST",
        headers: authHeaders({ "X-Filename": encodeURIComponent(f.file.name), "Content-Type": f.file.type || "application/octet-stream" }),
        credentials: "same-origin",
        body: f.file,
      });
      data = await res.json().catch(() => null);
    } catch (_) {
      return t("unreachable_short");
    }
    if (res.status === 401) return null;
    if (!res.ok) {
      if (res.status === 413) return t("too_large", f.file.name);
      return f.file.name + ": " + errorText(res, data);
    }
    f.id = data.id;
  }
  return undefined;
}

async function send(out, li) {
  const { text, key } = out;
  li.classList.remove("failed");
  li.querySelectorAll(".retry").forEach((b) => b.remove());
  setMeta(li, out.files.length ? t("uploading") : t("sending"));
  const problem = await uploadAll(out);
  if (problem === null) return sessionEnded();
  if (problem) return failed(li, out, t("not_sent", problem));
  setMeta(li, t("sending"));
  const body = { text };
  if (out.files.length) body.attachments = out.files.map((f) => f.id);
  // To the conversation shown; once it ended, the next message starts a
  // new one (the relay opens it).
  const conv = li.dataset.conv || null;
  if (conv && !state.ended.has(conv)) body.conversationId = conv;
  let reply;
  try {
    reply = await api("POST", "/inbound", body, { "Idempotency-Key": key });
    if (reply.res.status === 409 && reply.data && reply.data.error.code === "conversation_expired") {
      // It ended meanwhile (nothing was stored): start a new one.
      state.ended.add(conv);
      delete body.conversationId;
      reply = await api("POST", "/inbound", body, { "Idempotency-Key": key });
    }
  } catch (_) {
    return failed(li, out, t("not_sent", t("unreachable_short")));
  }
  const { res, data } = reply;
  if (res.ok) {
    li.dataset.conv = data.conversationId;
    if (data.conversationId !== state.current) select(data.conversationId);
    const known = state.convs.find((c) => c.id === data.conversationId);
    if (!known || !known.title) refreshListSoon();
    if (state.byId.has(data.id)) {
      // The stream showed it first.
      li.remove();
    } else {
      li.dataset.id = data.id;
      setStored(li, data);
      showFiles(li, data.attachments);
      state.byId.set(data.id, li);
    }
    // Until its answer comes, the user may stop it.
    working(data.conversationId, true);
    if (data.clientId === null) waitForAgent(data.conversationId);
    return;
  }
  if (res.status === 401) {
    sessionEnded();
    return;
  }
  let why = errorText(res, data);
  if (res.status === 429) why = t("too_many_messages");
  if (res.status === 413) why = t("too_long");
  failed(li, out, t("not_sent", why));
}

function failed(li, out, message) {
  li.classList.add("failed");
  setMeta(li, message);
  const retry = document.createElement("button");
  retry.type = "button";
  retry.className = "retry";
  retry.textContent = t("retry");
  // The same Idempotency-Key: a message that did arrive is not stored twice.
  retry.addEventListener("click", () => send(out, li));
  li.querySelector(".meta").appendChild(retry);
}

export function submit(event) {
  event.preventDefault();
  const box = $("text");
  const text = box.value;
  const files = state.picked.map((file) => ({ file, id: null }));
  if (!text.trim() && !files.length) return;
  box.value = "";
  state.picked = [];
  showPicked();
  grow();
  const label = files.map((f) => "[" + f.file.name + "]").join(" ");
  const li = bubble("inbound", text.trim() ? text : label);
  li.classList.add("pending");
  li.dataset.conv = state.current || "";
  append(li);
  $("messages").scrollTop = $("messages").scrollHeight;
  send({ text, key: newKey(), files }, li);
}

// Files picked, dropped or pasted: attached to the next message.
export function pick(files) {
  for (const f of files) state.picked.push(f);
  showPicked();
}

function showPicked() {
  const list = $("picked");
  list.replaceChildren();
  state.picked.forEach((f, i) => {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = f.name + " (" + sizeText(f.size) + ")";
    const drop = document.createElement("button");
    drop.type = "button";
    drop.textContent = "×";
    drop.setAttribute("aria-label", t("remove_file", f.name));
    drop.addEventListener("click", () => {
      state.picked.splice(i, 1);
      showPicked();
    });
    item.append(name, drop);
    list.appendChild(item);
  });
  list.hidden = state.picked.length === 0;
}

// The composer grows with what is typed, up to a limit.
export function grow() {
  const box = $("text");
  box.style.height = "auto";
  box.style.height = Math.min(box.scrollHeight, 160) + "px";
}
