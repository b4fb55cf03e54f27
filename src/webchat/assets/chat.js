// clawrelay web chat. Plain script, no dependencies, no build step.
//
// Authentication: the login cookie of a built-in account (POST /login sets
// it; every POST then carries the X-CSRF-Token the login returned), or a
// session token the embedding site hands over (/chat#token=… or
// postMessage({type: "clawrelay.token", token}) from the parent window),
// sent as a bearer token.
//
// History comes by page (GET /conversations/{id}/messages: the latest 50
// when a conversation is first shown, earlier ones as the reader scrolls
// up); what is new comes from GET /events read with fetch (so a bearer token
// can be sent), opened where the conversation list was read (its
// streamCursor): every message stored since, then live events. After a drop
// the stream resumes from the last cursor, and messages are kept by id, so
// nothing is missed or shown twice.
//
// Markdown: an agent's stored message comes with `html`, its Markdown
// rendered and sanitized by the relay (src/webchat/markdown.rs). That is the
// only HTML this page ever inserts, through the one Trusted Types policy
// below; the page's Content-Security-Policy requires Trusted Types, so no
// other string can reach innerHTML. Everything else (the user's own
// messages, a reply while it streams) is set with textContent.
//
// Attachments: files picked (or pasted) are uploaded (POST /attachments)
// when the message is sent, then listed in its `attachments`. A message's
// files are fetched with the same credentials and shown from blob: URLs:
// the image types the relay serves inline as images, anything else as a
// link that saves the file.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "clawrelay.token";

  const state = {
    token: null, // bearer session token (embedded), or null (cookie)
    csrf: null, // the login's CSRF token (cookie)
    user: null,
    expiresAt: 0,
    cursor: null, // where the stream resumes (null: not yet known)
    stream: null, // AbortController of the open stream
    backoff: 500,
    refreshTimer: null,
    activityTimer: null,
    current: null, // the conversation shown, and the one messages go to
    convs: [], // the user's conversations, as GET /conversations lists them
    ended: new Set(), // conversations that expired
    listTimer: null,
    byId: new Map(), // message id -> <li>
    streaming: new Map(), // replyId -> <li> being written
    settled: new Set(), // replyIds whose whole reply is stored
    picked: [], // files chosen for the next message
    waitingFor: null, // conversation whose message waits for an agent to connect
    assigned: new Set(), // conversations an agent took after they waited
    pages: new Map(), // conversation -> { before, loading } of its history read so far
  };
  const PAGE = 50;
  const INLINE = ["image/png", "image/jpeg", "image/gif", "image/webp"];

  // ---- languages -----------------------------------------------------
  //
  // English and Simplified Chinese, chosen from the browser's languages
  // unless the user picked one with the switch (remembered in this
  // browser). Elements of the page carry data-i18n (text),
  // data-i18n-placeholder, data-i18n-label (aria-label) and data-i18n-title.

  const STRINGS = {
    en: {
      lang_name: "English",
      chats: "Chats",
      log_out: "Log out",
      log_in: "Log in",
      name: "Name",
      password: "Password",
      conversations: "Conversations",
      conversation: "Conversation",
      new_conversation: "New conversation",
      files_to_send: "Files to send",
      attach_files: "Attach files",
      message: "Message",
      send: "Send",
      session_ended: "The session has ended.",
      language: "Language",
      no_agent: "No agent is connected yet. Your message is kept and will be answered when one connects.",
      agent_arrived: "An agent has connected and has your message.",
      unreachable_reload: "Cannot reach the relay. Reload the page to try again.",
      unreachable_retry: "Cannot reach the relay. Try again in a moment.",
      unreachable_login: "Cannot reach the relay. Check your connection and try again.",
      session_over_embedded: "This chat session has ended. Open the chat again from the site that sent you here.",
      session_over_login: "Your session has ended. Please log in again.",
      cannot_start: "Cannot start a conversation: {0}",
      enter_name_password: "Enter your name and password.",
      wrong_password: "Wrong name or password.",
      too_many_attempts: "Too many attempts. Wait a minute, then try again.",
      cannot_log_in: "Cannot log in: {0}",
      left_chat: "You have left the chat.",
      reconnecting: "Connection lost. Reconnecting…",
      using_tool_named: "Using {0}…",
      using_tool: "Using a tool…",
      tool_result_named: "Got a result from {0}…",
      tool_result: "Got a tool result…",
      thinking: "Thinking…",
      working: "Working…",
      typing: "The agent is typing…",
      code: "code",
      copy: "Copy",
      copied: "Copied",
      copy_failed: "Copy failed",
      copy_message: "Copy this message",
      just_now: "just now",
      min_ago: "{0} min ago",
      yesterday: "Yesterday {0}",
      ended: "ended",
      conversation_ended: "This conversation has ended. Your next message starts a new one.",
      unreachable_short: "cannot reach the relay",
      too_large: "{0} is too large",
      uploading: "Uploading…",
      sending: "Sending…",
      not_sent: "Not sent: {0}.",
      too_many_messages: "too many messages, wait a moment",
      too_long: "the message is too long",
      retry: "Retry",
      remove_file: "Remove {0}",
    },
    "zh-CN": {
      lang_name: "简体中文",
      chats: "对话",
      log_out: "退出",
      log_in: "登录",
      name: "用户名",
      password: "密码",
      conversations: "对话列表",
      conversation: "对话",
      new_conversation: "新对话",
      files_to_send: "待发送的文件",
      attach_files: "添加文件",
      message: "输入消息",
      send: "发送",
      session_ended: "会话已结束。",
      language: "语言",
      no_agent: "暂无客服代理在线。您的消息已保存，代理连接后会立即回复。",
      agent_arrived: "代理已连接，正在处理您的消息。",
      unreachable_reload: "无法连接到服务。请刷新页面重试。",
      unreachable_retry: "无法连接到服务。请稍后再试。",
      unreachable_login: "无法连接到服务。请检查网络后重试。",
      session_over_embedded: "本次聊天会话已结束。请从引导您来的网站重新打开聊天。",
      session_over_login: "您的会话已结束，请重新登录。",
      cannot_start: "无法开始新对话：{0}",
      enter_name_password: "请输入用户名和密码。",
      wrong_password: "用户名或密码错误。",
      too_many_attempts: "尝试次数过多，请一分钟后再试。",
      cannot_log_in: "无法登录：{0}",
      left_chat: "您已离开聊天。",
      reconnecting: "连接已断开，正在重新连接…",
      using_tool_named: "正在使用 {0}…",
      using_tool: "正在使用工具…",
      tool_result_named: "已收到 {0} 的结果…",
      tool_result: "已收到工具结果…",
      thinking: "思考中…",
      working: "处理中…",
      typing: "对方正在输入…",
      code: "代码",
      copy: "复制",
      copied: "已复制",
      copy_failed: "复制失败",
      copy_message: "复制这条消息",
      just_now: "刚刚",
      min_ago: "{0} 分钟前",
      yesterday: "昨天 {0}",
      ended: "已结束",
      conversation_ended: "此对话已结束。您的下一条消息将开始新的对话。",
      unreachable_short: "无法连接到服务",
      too_large: "{0} 太大",
      uploading: "上传中…",
      sending: "发送中…",
      not_sent: "未发送：{0}。",
      too_many_messages: "消息过于频繁，请稍候",
      too_long: "消息太长",
      retry: "重试",
      remove_file: "移除 {0}",
    },
  };
  const LANG_KEY = "clawrelay.lang";

  function chooseLang() {
    let saved = null;
    try {
      saved = localStorage.getItem(LANG_KEY);
    } catch (_) {
      saved = null;
    }
    if (saved && STRINGS[saved]) return saved;
    for (const l of navigator.languages || [navigator.language || "en"]) {
      if (/^zh\b/i.test(l) && !/^zh-(TW|HK|MO|Hant)/i.test(l)) return "zh-CN";
      if (/^en\b/i.test(l)) return "en";
    }
    return "en";
  }

  let lang = chooseLang();

  // The text of `key` in the page's language, with {0}, {1}… filled in.
  function t(key, ...args) {
    const text = (STRINGS[lang] && STRINGS[lang][key]) || STRINGS.en[key] || key;
    return text.replace(/\{(\d)\}/g, (_, i) => String(args[Number(i)]));
  }

  function applyLang() {
    document.documentElement.lang = lang;
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
    for (const el of document.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
    for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
    const pick = $("lang");
    pick.replaceChildren();
    for (const code of Object.keys(STRINGS)) {
      const option = document.createElement("option");
      option.value = code;
      option.textContent = STRINGS[code].lang_name;
      option.selected = code === lang;
      pick.appendChild(option);
    }
  }

  function setLang(code) {
    if (!STRINGS[code]) return;
    lang = code;
    try {
      localStorage.setItem(LANG_KEY, code);
    } catch (_) {
      // Not remembered: storage is off.
    }
    applyLang();
    for (const b of document.querySelectorAll("#messages .copy, #messages .copy-msg")) b.textContent = t("copy");
    for (const b of document.querySelectorAll("#messages .copy-msg")) b.setAttribute("aria-label", t("copy_message"));
    renderList();
    refreshTimes();
  }
  const markdownPolicy = window.trustedTypes
    ? window.trustedTypes.createPolicy("clawrelay-markdown", { createHTML: (html) => html })
    : { createHTML: (html) => html };

  function setConnection(value) {
    document.body.dataset.connection = value;
  }

  function authHeaders(extra) {
    const h = Object.assign({}, extra || {});
    if (state.token) h.Authorization = "Bearer " + state.token;
    else if (state.csrf) h["X-CSRF-Token"] = state.csrf;
    return h;
  }

  async function api(method, path, body, extra) {
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

  function errorText(res, data) {
    if (data && data.error && data.error.message) return data.error.message;
    return "HTTP " + res.status;
  }

  // ---- views ---------------------------------------------------------

  function show(view) {
    for (const id of ["login", "chat", "ended"]) $(id).hidden = id !== view;
    const inChat = view === "chat";
    $("who").hidden = !inChat;
    $("logout").hidden = !inChat;
    $("convs-toggle").hidden = !inChat;
  }

  function showLogin(message) {
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

  function setStatus(text) {
    const el = $("status");
    el.textContent = text || "";
    el.hidden = !text;
  }

  // Shows what the agent side is doing for `ms` (default 4 s; 0: until
  // replaced). Anything the agent does ends a wait for one.
  function setActivity(text, ms) {
    const el = $("activity");
    clearTimeout(state.activityTimer);
    el.textContent = text || "";
    el.hidden = !text;
    el.classList.toggle("waiting", ms === 0);
    if (text && ms !== 0) state.activityTimer = setTimeout(() => setActivity(null), ms || 4000);
  }

  // The relay stored the user's message with no agent connected (its
  // answer's clientId is null): say so until an agent takes it.
  function waitForAgent(conversationId) {
    if (state.assigned.has(conversationId)) return; // taken already
    state.waitingFor = conversationId;
    setActivity(t("no_agent"), 0);
  }

  function agentArrived(conversationId) {
    state.assigned.add(conversationId);
    if (state.waitingFor !== conversationId) return;
    state.waitingFor = null;
    setActivity(t("agent_arrived"), 8000);
  }

  function agentActive() {
    state.waitingFor = null;
  }

  // ---- session -------------------------------------------------------

  function setToken(token) {
    state.token = token;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Storage may be off (a sandboxed frame): the token lives in memory.
    }
  }

  // Asks the relay who this session is; true when there is one.
  async function whoami() {
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
    if (fresh) resetConversation();
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

  function resetConversation() {
    $("messages").replaceChildren();
    state.cursor = null;
    state.pages.clear();
    state.byId.clear();
    state.streaming.clear();
    state.settled.clear();
    state.current = null;
    state.convs = [];
    state.ended.clear();
    $("conv-list").replaceChildren();
  }

  // ---- conversations ---------------------------------------------------
  //
  // The user may hold several conversations; the page shows one at a time
  // (every message is kept in the list, those of other conversations
  // hidden). Messages go to the one shown; a new one is opened with
  // POST /conversations.

  async function loadConversations(selectLatest) {
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
      const shown = (active.length ? active : state.convs.slice());
      shown.sort((a, b) => b.updatedAt - a.updatedAt);
      if (shown.length) return select(shown[0].id);
    }
    renderList();
  }

  function refreshListSoon() {
    clearTimeout(state.listTimer);
    state.listTimer = setTimeout(() => loadConversations(false), 300);
  }

  function renderList() {
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

  function hiddenFor(conv) {
    return !!state.current && !!conv && conv !== state.current;
  }

  // Shows conversation `id`. (The drawer is the user's to close: a
  // selection made by the page, as the list loads, leaves it as it is.)
  function select(id) {
    // Another conversation's notices go; this one's stay (the list may
    // select the conversation shown again as it loads).
    if (state.current !== id) setActivity(null);
    state.current = id;
    for (const li of $("messages").children) li.hidden = hiddenFor(li.dataset.conv);
    renderList();
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

  function onScroll() {
    const list = $("messages");
    if (list.scrollTop < 60 && state.current) {
      const page = state.pages.get(state.current);
      if (page && page.before) loadHistory(state.current);
    }
  }

  async function newConversation() {
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

  function toggleDrawer(open) {
    const chat = $("chat");
    const now = open === undefined ? !chat.classList.contains("drawer-open") : open;
    chat.classList.toggle("drawer-open", now);
    $("convs-toggle").setAttribute("aria-expanded", String(now));
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

  function sessionEnded() {
    clearTimeout(state.refreshTimer);
    if (state.token) {
      setToken(null);
      showEnded(t("session_over_embedded"));
    } else {
      showLogin(t("session_over_login"));
    }
  }

  async function login(event) {
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

  async function logout() {
    try {
      await api("POST", "/logout");
    } catch (_) {
      // The session ends by itself at its expiry.
    }
    clearTimeout(state.refreshTimer);
    state.user = null;
    resetConversation();
    if (state.token) {
      setToken(null);
      showEnded(t("left_chat"));
    } else {
      showLogin();
    }
  }

  // ---- the stream ----------------------------------------------------

  function stopStream() {
    if (state.stream) state.stream.abort();
    state.stream = null;
  }

  async function openStream() {
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
        addDelta(payload);
        break;
      case "typing":
        agentActive();
        if (!hiddenFor(payload.conversationId)) setActivity(t("typing"));
        break;
      case "progress":
        agentActive();
        if (!hiddenFor(payload.conversationId)) setActivity(progressText(payload), 8000);
        break;
      case "conversation.assigned":
        agentArrived(payload.conversationId);
        break;
      case "conversation.expired":
        state.ended.add(payload.conversationId);
        addDivider(t("conversation_ended"), payload.conversationId);
        renderList();
        break;
      default:
        break;
    }
  }

  function progressText(p) {
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

  // ---- messages ------------------------------------------------------

  function nearBottom() {
    const list = $("messages");
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function append(node) {
    const list = $("messages");
    const stick = nearBottom();
    list.appendChild(node);
    if (stick) list.scrollTop = list.scrollHeight;
  }

  function bubble(direction, text) {
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

  function sizeText(n) {
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

  function showFiles(li, attachments) {
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

  function setMeta(li, text) {
    li.querySelector(".meta").textContent = text;
  }

  function timeOf(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  // "just now", "5 min ago", "14:02", "Yesterday 14:02", "3 Dec 14:02".
  function relative(ms) {
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
  // hover; an agent's message also gets a button that copies its text.
  function setStored(li, m) {
    const meta = li.querySelector(".meta");
    const when = document.createElement("time");
    when.dateTime = new Date(m.timestamp).toISOString();
    when.dataset.ms = String(m.timestamp);
    when.title = new Date(m.timestamp).toLocaleString();
    when.textContent = relative(m.timestamp);
    meta.replaceChildren(when);
    if (m.direction === "outbound") {
      const copy = copyButton("copy-msg", () => m.text);
      copy.setAttribute("aria-label", t("copy_message"));
      meta.appendChild(copy);
    }
  }

  // A Copy button that copies `text()` and says how it went for two
  // seconds. (No data-i18n: in a message body only the sanitizer's
  // attributes appear; setLang relabels these buttons itself.)
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

  // Relative times age: updated in place (the list is not rebuilt, so a
  // focused item keeps its focus).
  function refreshTimes() {
    for (const el of document.querySelectorAll("#messages time[data-ms], #conv-list .conv-when")) {
      el.textContent = relative(Number(el.dataset.ms)) + (el.dataset.ended ? " · " + t("ended") : "");
    }
  }

  function addDivider(text, conv) {
    const li = document.createElement("li");
    li.className = "divider";
    li.textContent = text;
    li.dataset.conv = conv || "";
    li.hidden = hiddenFor(conv);
    append(li);
  }

  // Shows stored message `m`: at the end, or before `before` (a page of
  // history).
  function addMessage(m, before) {
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
    // A reply ends what the agent was doing for it.
    if (m.direction === "outbound") {
      agentActive();
      setActivity(null);
    }
    showFiles(li, m.attachments);
    li.dataset.id = m.id;
    li.dataset.conv = m.conversationId;
    li.hidden = hiddenFor(m.conversationId);
    setStored(li, m);
    state.byId.set(m.id, li);
  }

  function addDelta(p) {
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

  // ---- sending -------------------------------------------------------

  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // Uploads the files of an outgoing message not uploaded yet (a retry
  // keeps what went up before); answers their ids, or an error text.
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

  function submit(event) {
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

  function pick(files) {
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

  function grow() {
    const box = $("text");
    box.style.height = "auto";
    box.style.height = Math.min(box.scrollHeight, 160) + "px";
  }

  function onParentMessage(event) {
    if (window.parent === window || event.source !== window.parent) return;
    const d = event.data;
    if (d && d.type === "clawrelay.token" && typeof d.token === "string") {
      setToken(d.token);
      state.csrf = null;
      whoami();
    }
  }

  async function start() {
    applyLang();
    $("lang").addEventListener("change", (e) => setLang(e.target.value));
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("composer").addEventListener("submit", submit);
    $("new-conv").addEventListener("click", newConversation);
    $("messages").addEventListener("scroll", onScroll, { passive: true });
    $("convs-toggle").addEventListener("click", () => toggleDrawer());
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape") toggleDrawer(false);
    });
    $("text").addEventListener("input", grow);
    $("attach").addEventListener("click", () => $("file").click());
    $("file").addEventListener("change", (e) => {
      pick(e.target.files);
      e.target.value = "";
    });
    // Files dropped anywhere on the chat are attached, as picked ones.
    const chat = $("chat");
    chat.addEventListener("dragover", (e) => {
      if (!e.dataTransfer || !Array.from(e.dataTransfer.types).includes("Files")) return;
      e.preventDefault();
      chat.classList.add("dropping");
    });
    chat.addEventListener("dragleave", (e) => {
      if (e.target === chat || !chat.contains(e.relatedTarget)) chat.classList.remove("dropping");
    });
    chat.addEventListener("drop", (e) => {
      chat.classList.remove("dropping");
      const files = e.dataTransfer ? Array.from(e.dataTransfer.files) : [];
      if (!files.length) return;
      e.preventDefault();
      pick(files);
      $("text").focus();
    });
    setInterval(refreshTimes, 30000);
    $("text").addEventListener("paste", (e) => {
      const files = e.clipboardData ? Array.from(e.clipboardData.files) : [];
      if (files.length) {
        e.preventDefault();
        pick(files);
      }
    });
    $("text").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) submit(e);
    });
    window.addEventListener("message", onParentMessage);

    const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromHash) {
      // Out of the address bar and the history at once.
      history.replaceState(null, "", location.pathname + location.search);
      setToken(fromHash);
    } else {
      try {
        state.token = sessionStorage.getItem(TOKEN_KEY);
      } catch (_) {
        state.token = null;
      }
    }
    if (!(await whoami())) showLogin();
  }

  start();
})();
