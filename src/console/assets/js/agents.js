// Agents (clients: the OpenClaw gateways and other agent instances): their
// state, queue and last poll; create one (its token shown once), rotate its
// token, revoke it (after a confirmation; its conversations move to other
// agents and its open connections close).

import { $, ago, attempt, badge, button, call, confirmAction, el, fill, showSecret, table, time } from "./ui.js";

export function init() {
  $("agent-create").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("agent-name").value.trim();
    const issued = await attempt(() => call("POST", "/clients", { name }));
    if (!issued) return;
    $("agent-name").value = "";
    showSecret(
      "agent-issued",
      `Token of agent ${issued.name}`,
      issued.token,
      "Shown only now: give it to the agent (e.g. the OpenClaw channel plugin's token). The relay keeps only its hash.",
    );
    load();
  });
}

export function show() {
  load();
}

async function load() {
  const data = await attempt(() => call("GET", "/clients"));
  if (!data) return;
  fill(
    "agents",
    table(
      ["Name", "Id", "State", "Pending", "Last seen", "Created", ""],
      data.clients.map((c) => [
        c.name,
        el("code", {}, c.clientId),
        badge(c.state),
        String(c.pending),
        ago(c.lastSeenAt),
        time(c.createdAt),
        c.state === "revoked"
          ? ""
          : el(
              "span",
              { class: "row-actions" },
              button("Rotate token", () => rotate(c)),
              button("Revoke", () => revoke(c), "small danger"),
            ),
      ]),
      "No agents yet.",
    ),
  );
}

async function rotate(c) {
  const ok = await confirmAction(`Replace the token of agent ${c.name}? The old token stops working at once.`, "Rotate");
  if (!ok) return;
  const issued = await attempt(() => call("POST", `/clients/${encodeURIComponent(c.clientId)}/token`));
  if (!issued) return;
  showSecret("agent-issued", `New token of agent ${c.name}`, issued.token);
  load();
}

async function revoke(c) {
  const ok = await confirmAction(
    `Revoke agent ${c.name}? Its token stops working, its connections close and its conversations move to other agents. This cannot be undone.`,
    "Revoke",
  );
  if (!ok) return;
  if (await attempt(() => call("DELETE", `/clients/${encodeURIComponent(c.clientId)}`))) load();
}
