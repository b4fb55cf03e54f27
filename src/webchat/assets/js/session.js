// The user's session and the API calls made with it: the login cookie of a
// built-in account (POST /login sets it; every POST then carries the
// X-CSRF-Token the login returned), or a session token the embedding site
// hands over (/chat#token=… or postMessage({type: "clawrelay.token",
// token}) from the parent window), sent as a bearer token. Also the page's
// three views: login, chat, ended.

import { $, state } from "./state.js";
import { t } from "./i18n.js";
import { loadConversations, resetConversations } from "./conversations.js";
import { openStream, stopStream } from "./stream.js";

const TOKEN_KEY = "clawrelay.token";

export function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h.Authorization = "Bearer " + state.token;
  else if (state.csrf) h["X-CSRF-Token"] = state.csrf;
  return h;
}

// One API call: answers the response and its JSON body (null when none).
export async function api(method, path, body, extra) {
  const init = {
    method,
    headers: authHeaders(extra),
    credentials: "same-origin",
    cache: "no-store",
  };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, init);
  let data = null;
  if (res.status !== 204) {
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
  }
  return { res, data };
}

export function errorText(res, data) {
  if (data && data.error && data.error.message) return data.error.message;
  return "HTTP " + res.status;
}

// ---- views -----------------------------------------------------------

function show(view) {
  for (const id of ["login", "chat", "ended"]) $(id).hidden = id !== view;
  const inChat = view === "chat";
  $("who").hidden = !inChat;
  $("logout").hidden = !inChat;
  $("convs-toggle").hidden = !inChat;
}

export function showLogin(message) {
  stopStream();
  state.csrf = null;
  show("login");
  const err = $("login-error");
  err.textContent = message || "";
  err.hidden = !message;
  $("name").focus();
}

function showEnded(message) {
  stopStream();
  show("ended");
  $("ended-text").textContent = message;
}

export function setStatus(text) {
  const el = $("status");
  el.textContent = text || "";
  el.hidden = !text;
}

// ---- the session -----------------------------------------------------

export function setToken(token) {
  state.token = token;
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (_) {
    // Storage may be off (a sandboxed frame): the token lives in memory.
  }
}

// The token this tab was given before (a reload keeps it).
export function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch (_) {
    return null;
  }
}

// Asks the relay who this session is; true when there is one.
export async function whoami() {
  let reply;
  try {
    reply = await api("GET", "/session");
  } catch (_) {
    showEnded(t("unreachable_reload"));
    return true;
  }
  const { res, data } = reply;
  if (!res.ok) {
    if (state.token) {
      setToken(null);
      showEnded(t("session_over_embedded"));
      return true;
    }
    return false;
  }
  if (data.csrfToken) state.csrf = data.csrfToken;
  enterChat(data);
  return true;
}

function enterChat(session) {
  const fresh = state.user !== session.userId;
  state.user = session.userId;
  state.expiresAt = session.expiresAt;
  $("who").textContent = session.userId;
  if (fresh) resetConversations();
  show("chat");
  scheduleRefresh();
  if (state.cursor === null) {
    // The list says where the stream starts: history is read by page.
    loadConversations(fresh).then(() => openStream());
  } else {
    openStream();
    loadConversations(fresh);
  }
  $("text").focus();
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  const half = Math.max(5000, (state.expiresAt - Date.now()) / 2);
  state.refreshTimer = setTimeout(refresh, Math.min(half, 2147483647));
}

async function refresh() {
  try {
    const { res, data } = await api("POST", "/sessions/refresh", {});
    if (res.status === 401) return sessionEnded();
    if (res.ok) state.expiresAt = data.expiresAt;
  } catch (_) {
    // Offline: try again later.
  }
  scheduleRefresh();
}

export function sessionEnded() {
  clearTimeout(state.refreshTimer);
  if (state.token) {
    setToken(null);
    showEnded(t("session_over_embedded"));
  } else {
    showLogin(t("session_over_login"));
  }
}

export async function login(event) {
  event.preventDefault();
  const name = $("name").value.trim();
  const password = $("password").value;
  const err = $("login-error");
  if (!name || !password) {
    err.textContent = t("enter_name_password");
    err.hidden = false;
    return;
  }
  const button = $("login-button");
  button.disabled = true;
  try {
    const { res, data } = await api("POST", "/login", { name, password });
    if (res.ok) {
      $("password").value = "";
      err.hidden = true;
      state.csrf = data.csrfToken;
      enterChat(data);
    } else if (res.status === 401) {
      showLogin(t("wrong_password"));
    } else if (res.status === 429) {
      showLogin(t("too_many_attempts"));
    } else {
      showLogin(t("cannot_log_in", errorText(res, data)));
    }
  } catch (_) {
    showLogin(t("unreachable_login"));
  } finally {
    button.disabled = false;
  }
}

export async function logout() {
  try {
    await api("POST", "/logout");
  } catch (_) {
    // The session ends by itself at its expiry.
  }
  clearTimeout(state.refreshTimer);
  state.user = null;
  resetConversations();
  if (state.token) {
    setToken(null);
    showEnded(t("left_chat"));
  } else {
    showLogin();
  }
}

// A token handed over by the embedding page.
export function onParentMessage(event) {
  if (window.parent === window || event.source !== window.parent) return;
  const d = event.data;
  if (d && d.type === "clawrelay.token" && typeof d.token === "string") {
    setToken(d.token);
    state.csrf = null;
    whoami();
  }
}
