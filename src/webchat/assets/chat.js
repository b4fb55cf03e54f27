// clawrelay web chat: plain ES modules served by the relay, no
// dependencies, no build step. This one starts the page and wires its
// controls; the rest, by concern:
//
//   js/state.js          the shared state
//   js/i18n.js           English and Simplified Chinese
//   js/session.js        the session, the API calls, login and logout
//   js/stream.js         GET /events: stored messages and live events
//   js/conversations.js  the list, the one shown, history by page
//   js/render.js         messages: Markdown the relay rendered, files, times
//   js/activity.js       what the agent is doing, and Stop
//   js/compose.js        writing and sending, with files

import { $, state } from "./js/state.js";
import { applyLang, setLang } from "./js/i18n.js";
import { login, logout, onParentMessage, setToken, showLogin, storedToken, whoami } from "./js/session.js";
import { newConversation, onScroll, renderList, toggleDrawer } from "./js/conversations.js";
import { relabel, refreshTimes } from "./js/render.js";
import { stopReply } from "./js/activity.js";
import { grow, pick, submit } from "./js/compose.js";

async function start() {
  applyLang();
  $("lang").addEventListener("change", (e) => {
    if (!setLang(e.target.value)) return;
    renderList();
    relabel();
  });
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("composer").addEventListener("submit", submit);
  $("stop").addEventListener("click", stopReply);
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
    state.token = storedToken();
  }
  if (!(await whoami())) showLogin();
}

start();
