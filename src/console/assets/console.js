// The admin console's entry: the login (the admin token is sent once, to
// POST /admin/login; the page keeps only the CSRF token, in memory), the
// sections, and the login's refresh while the console is used.

import { $, api, session, status } from "./js/ui.js";
import * as overview from "./js/overview.js";
import * as agents from "./js/agents.js";
import * as apps from "./js/apps.js";
import * as conversations from "./js/conversations.js";
import * as deliveries from "./js/deliveries.js";

const VIEWS = { overview, agents, apps, conversations, deliveries };
let current = null;
let lastActivity = Date.now();

function showLogin(message) {
  session.csrf = null;
  if (current && VIEWS[current].hide) VIEWS[current].hide();
  current = null;
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  status("");
  $("token").focus();
}

// When the login ends, on this page's clock (the relay says how long is
// left: the two clocks need not agree).
function lasts(data) {
  session.deadline = Date.now() + data.expiresIn;
}

function loggedIn(data) {
  session.csrf = data.csrfToken;
  session.lifetime = data.expiresIn;
  lasts(data);
  $("login").hidden = true;
  $("nav").hidden = false;
  $("logout").hidden = false;
  route();
}

function route() {
  if (!session.csrf) return;
  const name = (location.hash || "#overview").slice(1).split("/")[0];
  const view = VIEWS[name] ? name : "overview";
  if (current && current !== view && VIEWS[current].hide) VIEWS[current].hide();
  current = view;
  for (const [n] of Object.entries(VIEWS)) $("view-" + n).hidden = n !== view;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  status("");
  VIEWS[view].show();
}

async function login(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  $("login-button").disabled = true;
  let answer;
  try {
    answer = await fetch("/admin/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
      credentials: "same-origin",
    });
  } catch (_) {
    $("login-button").disabled = false;
    $("login-error").textContent = "The relay cannot be reached.";
    return;
  }
  $("login-button").disabled = false;
  const data = await answer.json().catch(() => null);
  // The token leaves the page: it is not kept anywhere.
  $("token").value = "";
  if (!answer.ok) {
    const e = data && data.error;
    // A wrong token, an agent's or an app's: all "not the admin token".
    $("login-error").textContent =
      answer.status === 401 ? "That is not the admin token." : e ? e.message : `HTTP ${answer.status}`;
    $("token").focus();
    return;
  }
  loggedIn(data);
}

async function logout() {
  await api("POST", "/admin/logout").catch(() => {});
  showLogin("Logged out.");
}

// While the console is used, the login is extended before it ends; an
// idle console is logged out when it does.
async function keepAlive() {
  if (!session.csrf) return;
  const left = session.deadline - Date.now();
  // Used within the last third of a login's length (at most 5 minutes).
  const recent = Date.now() - lastActivity < Math.min(5 * 60 * 1000, session.lifetime / 3);
  if (left < session.lifetime / 2 && recent) {
    const { res, data } = await api("POST", "/admin/session/refresh").catch(() => ({ res: null }));
    if (res && res.ok) lasts(data);
  } else if (left <= 0) {
    showLogin("Your login ended: log in again.");
  }
}

async function start() {
  session.onEnded = () => showLogin("Your login ended: log in again.");
  $("login").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  for (const kind of ["pointerdown", "keydown"]) {
    document.addEventListener(kind, () => (lastActivity = Date.now()), { passive: true });
  }
  setInterval(keepAlive, 15 * 1000);
  for (const v of Object.values(VIEWS)) if (v.init) v.init();
  // A page loaded while logged in reads its CSRF token from the session.
  const { res, data } = await api("GET", "/admin/session").catch(() => ({ res: null }));
  if (res && res.ok) loggedIn(data);
  else showLogin();
}

start();
