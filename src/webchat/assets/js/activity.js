// What the agent side is doing, as the user sees it: the activity line
// (typing, tool progress, waiting for an agent to connect), and whether the
// agent is answering in a conversation, with the Stop button that ends it
// (POST /conversations/{id}/stop: the relay withdraws or cancels the turn
// and keeps what was streamed, marked stopped).

import { $, state } from "./state.js";
import { t } from "./i18n.js";
import { api, errorText, sessionEnded, setStatus } from "./session.js";
import { hiddenFor } from "./conversations.js";
import { addMessage, dropStreaming } from "./render.js";

// Shows what the agent side is doing in conversation `conv` for `ms`
// (default 4 s; 0: until replaced), with moving dots while it works.
// Anything the agent does ends a wait for one.
export function setActivity(text, ms, conv) {
  const el = $("activity");
  clearTimeout(state.activityTimer);
  state.activityFor = (text && conv) || null;
  $("activity-text").textContent = text || "";
  el.hidden = !text;
  el.classList.toggle("waiting", ms === 0);
  if (text && ms !== 0) state.activityTimer = setTimeout(() => setActivity(null), ms || 4000);
}

// The relay stored the user's message with no agent connected (its
// answer's clientId is null): say so until an agent takes it.
export function waitForAgent(conversationId) {
  if (state.assigned.has(conversationId)) return; // taken already
  state.waitingFor = conversationId;
  setActivity(t("no_agent"), 0, conversationId);
}

export function agentArrived(conversationId) {
  state.assigned.add(conversationId);
  if (state.waitingFor !== conversationId) return;
  state.waitingFor = null;
  setActivity(t("agent_arrived"), 8000, conversationId);
}

export function agentActive() {
  state.waitingFor = null;
}

export function progressText(p) {
  const data = p.data || {};
  const name = typeof data.name === "string" ? data.name : typeof data.tool === "string" ? data.tool : null;
  switch (p.kind) {
    case "tool_start":
      return name ? t("using_tool_named", name) : t("using_tool");
    case "tool_result":
      return name ? t("tool_result_named", name) : t("tool_result");
    case "reasoning_stream":
      return t("thinking");
    default:
      return t("working");
  }
}

// The agent is answering in conversation `conv` (a message of the user's
// is on its way or being answered), or no longer is.
export function working(conv, on) {
  if (!conv) return;
  if (on) state.working.add(conv);
  else state.working.delete(conv);
  showWorking();
}

// The Stop button: shown while the agent answers in the conversation shown.
export function showWorking() {
  $("stop").hidden = !(state.current && state.working.has(state.current));
}

export async function stopReply() {
  const conv = state.current;
  if (!conv) return;
  const button = $("stop");
  button.disabled = true;
  let reply;
  try {
    reply = await api("POST", "/conversations/" + encodeURIComponent(conv) + "/stop", {});
  } catch (_) {
    button.disabled = false;
    return setStatus(t("stop_failed", t("unreachable_short")));
  }
  button.disabled = false;
  const { res, data } = reply;
  if (res.status === 401) return sessionEnded();
  if (!res.ok) return setStatus(t("stop_failed", errorText(res, data)));
  stopped(conv, data.message, null);
  $("text").focus();
}

// A stop took effect (this page's, or one seen on the stream): the reply
// being written settles as stored (`message`, marked stopped), or goes
// when nothing of it was stored.
export function stopped(conv, message, replyId) {
  working(conv, false);
  if (!hiddenFor(conv)) setActivity(null);
  if (message) addMessage(message);
  else if (replyId) dropStreaming(replyId);
}
