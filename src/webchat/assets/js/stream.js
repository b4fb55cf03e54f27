// What is new comes from GET /events, read with fetch (so a bearer token
// can be sent), opened where the conversation list was read (its
// streamCursor): every message stored since, then live events. After a drop
// the stream resumes from the last cursor, and messages are kept by id, so
// nothing is missed or shown twice.

import { state } from "./state.js";
import { t } from "./i18n.js";
import { authHeaders, sessionEnded, setStatus } from "./session.js";
import { hiddenFor, renderList } from "./conversations.js";
import { addDelta, addDivider, addMessage } from "./render.js";
import { agentActive, agentArrived, progressText, setActivity, stopped, working } from "./activity.js";

function setConnection(value) {
  document.body.dataset.connection = value;
}

export function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

export async function openStream() {
  stopStream();
  const ctl = new AbortController();
  state.stream = ctl;
  setConnection("connecting");
  try {
    const after = state.cursor === null ? "" : "?after=" + encodeURIComponent(state.cursor);
    const res = await fetch("/events" + after, {
      headers: authHeaders({ Accept: "text/event-stream" }),
      credentials: "same-origin",
      cache: "no-store",
      signal: ctl.signal,
    });
    if (res.status === 401) {
      if (state.stream === ctl) sessionEnded();
      return;
    }
    if (!res.ok || !res.body) throw new Error("HTTP " + res.status);
    setStatus(null);
    setConnection("open");
    state.backoff = 500;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        onEvent(block);
      }
    }
  } catch (_) {
    // Dropped: reconnect below.
  }
  if (ctl.signal.aborted || state.stream !== ctl) return;
  setConnection("reconnecting");
  setStatus(t("reconnecting"));
  setTimeout(() => {
    if (state.stream === ctl) openStream();
  }, state.backoff);
  state.backoff = Math.min(state.backoff * 2, 5000);
}

// One server-sent event block.
function onEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  let payload;
  try {
    payload = JSON.parse(data.join("\n"));
  } catch (_) {
    return;
  }
  switch (event) {
    case "message":
      state.cursor = payload.cursor;
      addMessage(payload.message);
      break;
    case "reply.delta":
      agentActive();
      working(payload.conversationId, true);
      addDelta(payload);
      break;
    case "typing":
      agentActive();
      working(payload.conversationId, true);
      if (!hiddenFor(payload.conversationId)) setActivity(t("typing"), undefined, payload.conversationId);
      break;
    case "progress":
      agentActive();
      working(payload.conversationId, true);
      if (!hiddenFor(payload.conversationId)) setActivity(progressText(payload), 8000, payload.conversationId);
      break;
    case "reply.stopped":
      // The stopped reply, if any was streamed, came just before as a
      // message.
      stopped(payload.conversationId, null, payload.messageId ? null : payload.replyId);
      break;
    case "conversation.assigned":
      agentArrived(payload.conversationId);
      break;
    case "conversation.expired":
      state.ended.add(payload.conversationId);
      working(payload.conversationId, false);
      addDivider(t("conversation_ended"), payload.conversationId);
      renderList();
      break;
    default:
      break;
  }
}
