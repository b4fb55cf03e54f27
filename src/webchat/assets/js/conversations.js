// The user's conversations: the list (a sidebar on a desktop, a drawer on
// a phone), the one shown, its history read by page, and new ones. The
// page shows one conversation at a time (every message is kept in the
// list, those of other conversations hidden). Messages go to the one
// shown; a new one is opened with POST /conversations.

import { $, PAGE, state } from "./state.js";
import { t } from "./i18n.js";
import { api, errorText, sessionEnded, setStatus } from "./session.js";
import { addMessage, relative } from "./render.js";
import { setActivity, showWorking } from "./activity.js";

export function resetConversations() {
  $("messages").replaceChildren();
  state.cursor = null;
  state.pages.clear();
  state.byId.clear();
  state.streaming.clear();
  state.settled.clear();
  state.working.clear();
  state.current = null;
  state.convs = [];
  state.ended.clear();
  $("conv-list").replaceChildren();
  showWorking();
}

export async function loadConversations(selectLatest) {
  let reply;
  try {
    reply = await api("GET", "/conversations?limit=100");
  } catch (_) {
    return;
  }
  const { res, data } = reply;
  if (res.status === 401) return sessionEnded();
  if (!res.ok) return;
  if (state.cursor === null) state.cursor = data.streamCursor;
  state.convs = data.conversations;
  for (const c of state.convs) if (c.state === "expired") state.ended.add(c.id);
  if (selectLatest || !state.current) {
    // The most recently active conversation; when every one has ended,
    // the latest, as history (the next message starts a new one).
    const active = state.convs.filter((c) => !state.ended.has(c.id));
    const shown = active.length ? active : state.convs.slice();
    shown.sort((a, b) => b.updatedAt - a.updatedAt);
    if (shown.length) return select(shown[0].id);
  }
  renderList();
}

export function refreshListSoon() {
  clearTimeout(state.listTimer);
  state.listTimer = setTimeout(() => loadConversations(false), 300);
}

export function renderList() {
  const list = $("conv-list");
  list.replaceChildren();
  for (const c of state.convs) {
    const item = document.createElement("li");
    if (state.ended.has(c.id)) item.className = "ended";
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.conv = c.id;
    if (c.id === state.current) button.setAttribute("aria-current", "true");
    const title = document.createElement("span");
    title.className = "conv-title";
    title.textContent = c.title || t("new_conversation");
    const when = document.createElement("span");
    when.className = "conv-when";
    when.dataset.ms = String(c.updatedAt);
    if (state.ended.has(c.id)) when.dataset.ended = "1";
    when.textContent = relative(c.updatedAt) + (state.ended.has(c.id) ? " · " + t("ended") : "");
    when.title = new Date(c.updatedAt).toLocaleString();
    button.append(title, when);
    button.addEventListener("click", () => {
      select(c.id);
      toggleDrawer(false);
      $("text").focus();
    });
    item.appendChild(button);
    list.appendChild(item);
  }
}

// Whether what belongs to conversation `conv` is hidden (another one is
// shown).
export function hiddenFor(conv) {
  return !!state.current && !!conv && conv !== state.current;
}

// Shows conversation `id`. (The drawer is the user's to close: a
// selection made by the page, as the list loads, leaves it as it is.)
export function select(id) {
  // Another conversation's notices go; this one's stay (the list may
  // select, as it loads, the conversation a notice already came for).
  if (state.current !== id && state.activityFor !== id) setActivity(null);
  state.current = id;
  for (const li of $("messages").children) li.hidden = hiddenFor(li.dataset.conv);
  renderList();
  showWorking();
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
  if (!state.pages.has(id)) loadHistory(id);
}

// Reads a page of conversation `id`'s history: the latest the first time,
// then the one before what is shown. Its messages go before those of the
// conversation already listed (what the stream brought is newer); the
// reader's view stays where it was when earlier messages come in above.
async function loadHistory(id) {
  const page = state.pages.get(id) || { before: undefined, loading: false };
  if (page.loading || page.before === null) return;
  page.loading = true;
  state.pages.set(id, page);
  let path = "/conversations/" + encodeURIComponent(id) + "/messages?limit=" + PAGE;
  if (page.before) path += "&before=" + encodeURIComponent(page.before);
  let reply;
  try {
    reply = await api("GET", path);
  } catch (_) {
    page.loading = false;
    return;
  }
  page.loading = false;
  const { res, data } = reply;
  if (res.status === 401) return sessionEnded();
  if (!res.ok) return;
  const list = $("messages");
  const earlier = page.before !== undefined;
  const fromBottom = list.scrollHeight - list.scrollTop;
  const anchor = [...list.children].find((li) => li.dataset.conv === id) || null;
  for (const m of data.messages) addMessage(m, anchor);
  page.before = data.before;
  list.scrollTop = earlier ? list.scrollHeight - fromBottom : list.scrollHeight;
}

export function onScroll() {
  const list = $("messages");
  if (list.scrollTop < 60 && state.current) {
    const page = state.pages.get(state.current);
    if (page && page.before) loadHistory(state.current);
  }
}

export async function newConversation() {
  let reply;
  try {
    reply = await api("POST", "/conversations", {});
  } catch (_) {
    return setStatus(t("unreachable_retry"));
  }
  const { res, data } = reply;
  if (res.status === 401) return sessionEnded();
  if (!res.ok) return setStatus(t("cannot_start", errorText(res, data)));
  state.convs = [data].concat(state.convs.filter((c) => c.id !== data.id));
  select(data.id);
  toggleDrawer(false);
  $("text").focus();
}

export function toggleDrawer(open) {
  const chat = $("chat");
  const now = open === undefined ? !chat.classList.contains("drawer-open") : open;
  chat.classList.toggle("drawer-open", now);
  $("convs-toggle").setAttribute("aria-expanded", String(now));
}
