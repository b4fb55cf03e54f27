// Apps (the user-facing side: a website, a chat widget, an IM bridge):
// create one (its token shown once), rotate, revoke; and for one app its
// built-in accounts (web chat logins: create, disable or enable, reset a
// password) and its webhooks (attempts, replay, enable or disable, rotate
// the signing secret, add one).

import { $, ago, attempt, badge, button, call, confirmAction, el, fill, showSecret, table, time } from "./ui.js";

let selected = null;

export function init() {
  $("app-create").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("app-name").value.trim();
    const issued = await attempt(() => call("POST", "/apps", { name }));
    if (!issued) return;
    $("app-name").value = "";
    showSecret("app-issued", `Token of app ${issued.name}`, issued.token);
    load();
  });
}

export function show() {
  load();
}

const enc = encodeURIComponent;

async function load() {
  const data = await attempt(() => call("GET", "/apps"));
  if (!data) return;
  fill(
    "apps",
    table(
      ["Name", "Id", "State", "Created", ""],
      data.apps.map((a) => [
        a.name,
        el("code", {}, a.appId),
        badge(a.revokedAt ? "revoked" : a.public ? "public" : "active"),
        time(a.createdAt),
        el(
          "span",
          { class: "row-actions" },
          button("Accounts & webhooks", () => open(a)),
          a.revokedAt || a.public ? null : button("Rotate token", () => rotate(a)),
          a.revokedAt || a.public ? null : button("Revoke", () => revoke(a), "small danger"),
        ),
      ]),
      "No apps yet.",
    ),
  );
  if (selected) {
    const still = data.apps.find((a) => a.appId === selected.appId);
    if (still) open(still);
  }
}

async function rotate(a) {
  if (!(await confirmAction(`Replace the token of app ${a.name}? The old token stops working at once.`, "Rotate"))) return;
  const issued = await attempt(() => call("POST", `/apps/${enc(a.appId)}/token`));
  if (issued) showSecret("app-issued", `New token of app ${a.name}`, issued.token);
}

async function revoke(a) {
  const text = `Revoke app ${a.name}? Its token and its users' sessions stop working. This cannot be undone.`;
  if (!(await confirmAction(text, "Revoke"))) return;
  if (await attempt(() => call("DELETE", `/apps/${enc(a.appId)}`))) load();
}

// One app's accounts and webhooks.
async function open(a) {
  selected = a;
  const [accounts, hooks] = await Promise.all([
    attempt(() => call("GET", `/accounts?appId=${enc(a.appId)}`)),
    attempt(() => call("GET", `/apps/${enc(a.appId)}/webhooks`)),
  ]);
  if (!accounts || !hooks) return;
  const detail = $("app-detail");
  detail.hidden = false;
  const secret = el("div");
  const accountForm = el(
    "form",
    { class: "inline" },
    el("label", { for: "account-name" }, "New account"),
    el("input", { id: "account-name", placeholder: "login name", required: true, maxlength: 64 }),
    el("button", { type: "submit" }, "Create"),
  );
  accountForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("account-name").value.trim();
    const made = await attempt(() => call("POST", "/accounts", { appId: a.appId, name }));
    if (!made) return;
    await open(a);
    showSecret($("app-secret"), `Password of ${made.name}`, made.password, "Shown only now: give it to its user.");
  });
  const hookForm = el(
    "form",
    { class: "inline" },
    el("label", { for: "webhook-url" }, "New webhook"),
    el("input", { id: "webhook-url", type: "url", placeholder: "https://example.com/hook", required: true }),
    el("button", { type: "submit" }, "Add"),
  );
  hookForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const url = $("webhook-url").value.trim();
    const made = await attempt(() => call("POST", `/apps/${enc(a.appId)}/webhooks`, { url }));
    if (!made) return;
    await open(a);
    showSecret($("app-secret"), `Signing secret of ${made.url}`, made.secret);
  });
  fill(
    detail,
    el(
      "div",
      { class: "card" },
      el("h3", {}, `${a.name}: accounts`),
      el("div", { id: "app-secret" }, secret),
      a.revokedAt ? null : accountForm,
      table(
        ["Name", "State", "Created", ""],
        accounts.accounts.map((acc) => [
          acc.name,
          badge(acc.disabledAt ? "disabled" : "active"),
          time(acc.createdAt),
          el(
            "span",
            { class: "row-actions" },
            button(acc.disabledAt ? "Enable" : "Disable", () => setDisabled(a, acc, !acc.disabledAt)),
            button("Reset password", () => resetPassword(a, acc)),
          ),
        ]),
        "No accounts: this app's users come from its own backend.",
      ),
    ),
    el(
      "div",
      { class: "card" },
      el("h3", {}, `${a.name}: webhooks`),
      a.revokedAt ? null : hookForm,
      table(
        ["URL", "State", "Failures", "Waiting", ""],
        hooks.webhooks.map((w) => [
          el("code", {}, w.url),
          badge(w.enabled ? (w.failures ? "failing" : "enabled") : "disabled"),
          w.failures ? `${w.failures} since ${new Date(w.failingSince).toLocaleString()}` : "0",
          String(w.backlog),
          el(
            "span",
            { class: "row-actions" },
            button("Attempts", () => attempts(w)),
            button(w.enabled ? "Disable" : "Enable", () => setEnabled(a, w, !w.enabled)),
            button("Rotate secret", () => rotateSecret(a, w)),
          ),
        ]),
        "No webhooks.",
      ),
      el("div", { id: "attempts" }),
    ),
  );
}

async function setDisabled(a, acc, disabled) {
  if (disabled && !(await confirmAction(`Disable ${acc.name}? Its sessions end and it cannot log in.`, "Disable"))) return;
  if (await attempt(() => call("PATCH", `/accounts/${enc(acc.name)}`, { disabled }))) open(a);
}

async function resetPassword(a, acc) {
  if (!(await confirmAction(`Set a new password for ${acc.name}? Its sessions end.`, "Reset"))) return;
  const set = await attempt(() => call("POST", `/accounts/${enc(acc.name)}/password`, {}));
  if (set) showSecret($("app-secret"), `New password of ${acc.name}`, set.password, "Shown only now: give it to its user.");
}

async function setEnabled(a, w, enabled) {
  if (await attempt(() => call("PATCH", `/webhooks/${enc(w.webhookId)}`, { enabled }))) open(a);
}

async function rotateSecret(a, w) {
  const text = `Rotate the signing secret of ${w.url}? The old one keeps signing for the configured grace period.`;
  if (!(await confirmAction(text, "Rotate"))) return;
  const made = await attempt(() => call("POST", `/webhooks/${enc(w.webhookId)}/secret`, {}));
  if (made) showSecret($("app-secret"), `New signing secret of ${w.url}`, made.secret);
}

async function attempts(w) {
  const data = await attempt(() => call("GET", `/webhooks/${enc(w.webhookId)}/attempts?limit=50`));
  if (!data) return;
  fill(
    "attempts",
    el("h4", {}, `Attempts to ${w.url}`),
    el(
      "p",
      {},
      button("Replay the last hour", () => replay(w, { since: Date.now() - 3600 * 1000 })),
    ),
    table(
      ["When", "Event", "Status", "Error", "Latency", ""],
      data.attempts.map((t) => [
        ago(t.at),
        t.eventType,
        t.status === null ? "no answer" : String(t.status),
        t.error || (t.response ? t.response.slice(0, 80) : ""),
        `${t.latencyMs} ms`,
        button("Replay", () => replay(w, { eventId: t.eventId })),
      ]),
      "No attempts yet.",
    ),
  );
}

async function replay(w, body) {
  const done = await attempt(() => call("POST", `/webhooks/${enc(w.webhookId)}/replay`, body));
  if (done) $("status").textContent = `${done.replayed} event(s) queued again for ${w.url}.`;
}
