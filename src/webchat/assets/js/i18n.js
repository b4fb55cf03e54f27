// The page's languages: English and Simplified Chinese, chosen from the
// browser's languages unless the user picked one with the switch
// (remembered in this browser). Elements of the page carry data-i18n
// (text), data-i18n-placeholder, data-i18n-label (aria-label) and
// data-i18n-title; everything the scripts write goes through t().

import { $ } from "./state.js";

export const STRINGS = {
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
    stop: "Stop",
    stop_label: "Stop the agent's reply",
    stopped: "Stopped",
    stop_failed: "Could not stop: {0}",
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
    stop: "停止",
    stop_label: "停止代理的回复",
    stopped: "已停止",
    stop_failed: "无法停止：{0}",
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
export function t(key, ...args) {
  const text = (STRINGS[lang] && STRINGS[lang][key]) || STRINGS.en[key] || key;
  return text.replace(/\{(\d)\}/g, (_, i) => String(args[Number(i)]));
}

// Writes the page's own texts in the current language, and the switch.
export function applyLang() {
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

// Switches to language `code` and remembers it; answers whether it did
// (the caller rewrites what the scripts wrote).
export function setLang(code) {
  if (!STRINGS[code]) return false;
  lang = code;
  try {
    localStorage.setItem(LANG_KEY, code);
  } catch (_) {
    // Not remembered: storage is off.
  }
  applyLang();
  return true;
}
