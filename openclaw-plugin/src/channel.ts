/**
 * The `clawrelay` channel: OpenClaw's view of a clawrelay relay.
 *
 * - `gateway.startAccount` keeps each configured account connected and
 *   answers its deliveries (see monitor.ts);
 * - `outbound.sendText` (and `sendMedia`, with a file uploaded as an
 *   attachment) carries proactive sends (`openclaw message send
 *   --channel clawrelay --target conv_…`) to the app user of that conversation,
 *   and the answers of OpenClaw's restart recovery (see monitor.ts);
 * - `status` reports connected / reconnecting / last error.
 */
import type { ChannelPlugin, OpenClawConfig, PluginRuntime } from "openclaw/plugin-sdk/channel-core";
import { CHANNEL_ID, listAccountIds, resolveAccount, type ClawrelayAccount } from "./config.js";
import { sendAttachments } from "./media.js";
import { AccountMonitor, isInterimNotice, MAX_MEDIA_BYTES, recoveryAnswered, recoveryKey } from "./monitor.js";
import { RelayError, RelayHttp } from "./relay-client.js";

let pluginRuntime: PluginRuntime | undefined;

export function setRuntime(runtime: PluginRuntime): void {
  pluginRuntime = runtime;
}

/** A relay conversation id, the channel's delivery target. */
const CONVERSATION_ID = /^conv_[0-9a-f]{32}$/;

function normalizeTarget(raw: string): string {
  return raw.trim().replace(/^clawrelay:/, "");
}

/** What `outbound.sendText` and `sendMedia` get (the parts they use). */
interface OutboundContext {
  cfg: OpenClawConfig;
  accountId?: string | null;
  to: string;
  text: string;
}

/**
 * Stores `ctx.text` (and `attachments`) for the app user of the target
 * conversation: a proactive send, or an answer of OpenClaw's restart recovery.
 */
async function sendToConversation(ctx: OutboundContext, attachments: string[]) {
  const account = resolveAccount(ctx.cfg, ctx.accountId);
  if (!account.configured) throw new Error(`clawrelay account "${account.accountId}" is not configured`);
  const conversationId = normalizeTarget(ctx.to);
  if (!CONVERSATION_ID.test(conversationId)) {
    throw new Error(`clawrelay targets are conversation ids (conv_…), not "${ctx.to}"`);
  }
  const http = new RelayHttp(account.serverUrl, account.token);
  const user = await http.conversationUser(conversationId);
  // OpenClaw's restart recovery answering a delivery the plugin holds
  // open: that delivery's key makes a retried recovery send store once,
  // and storing it acks the delivery. Anything else sent this way (the
  // recovery's interim notice, a proactive `openclaw message send`)
  // answers nothing the plugin holds: stored without acking, so a
  // gateway that dies again before the answer gets the message once more.
  const pending = recoveryKey(conversationId);
  const key = pending !== undefined && !isInterimNotice(ctx.text) ? pending : undefined;
  let messageId: string;
  try {
    messageId = (await http.send(conversationId, user, ctx.text, key, key !== undefined, attachments)).id;
  } catch (e) {
    // A recovery after another crash answered with other words: the
    // answer stored first stands, and the delivery is acked already.
    if (!(key && e instanceof RelayError && e.code === "idempotency_key_reused")) throw e;
    messageId = key;
  }
  if (key) recoveryAnswered(conversationId, key);
  return { channel: CHANNEL_ID, messageId, target: { kind: "conversation" as const, id: conversationId } };
}

export const clawrelayPlugin: ChannelPlugin<ClawrelayAccount> = {
  id: CHANNEL_ID,
  meta: {
    id: CHANNEL_ID,
    label: "clawrelay",
    selectionLabel: "clawrelay (durable relay)",
    docsPath: "/channels/clawrelay",
    blurb: "Durable relay between apps (web chat, widgets, IM bridges) and OpenClaw.",
  },
  capabilities: {
    chatTypes: ["direct"],
    blockStreaming: true,
  },
  reload: { configPrefixes: [`channels.${CHANNEL_ID}`] },
  config: {
    listAccountIds: (cfg: OpenClawConfig) => listAccountIds(cfg),
    resolveAccount: (cfg: OpenClawConfig, accountId?: string | null) => resolveAccount(cfg, accountId),
    defaultAccountId: () => "default",
    inspectAccount: (cfg: OpenClawConfig, accountId?: string | null) => {
      const a = resolveAccount(cfg, accountId);
      return {
        accountId: a.accountId,
        enabled: a.enabled,
        configured: a.configured,
        tokenStatus: a.token ? "available" : "missing",
        serverUrl: a.serverUrl || null,
        transport: a.transport,
      };
    },
    isEnabled: (account: ClawrelayAccount) => account.enabled,
    isConfigured: (account: ClawrelayAccount) => account.configured,
    unconfiguredReason: (account: ClawrelayAccount) =>
      !account.serverUrl ? "channels.clawrelay.serverUrl is not set" : "channels.clawrelay.token is not set",
  },
  gateway: {
    startAccount: async (ctx) => {
      if (!ctx.account.configured) {
        ctx.log?.warn(`[clawrelay:${ctx.accountId}] not configured: set channels.clawrelay.serverUrl and token`);
        ctx.setStatus({ ...ctx.getStatus(), accountId: ctx.accountId, running: false, configured: false });
        return;
      }
      await new AccountMonitor(ctx, pluginRuntime).run();
    },
  },
  outbound: {
    deliveryMode: "direct",
    textChunkLimit: 60_000,
    sendText: async (ctx) => sendToConversation(ctx, []),
    sendMedia: async (ctx) => {
      const account = resolveAccount(ctx.cfg, ctx.accountId);
      if (!account.configured) throw new Error(`clawrelay account "${account.accountId}" is not configured`);
      const media = pluginRuntime?.media;
      if (!media) throw new Error("the gateway provided no media runtime to read the file");
      const http = new RelayHttp(account.serverUrl, account.token);
      const urls = ctx.mediaUrl ? [ctx.mediaUrl] : [];
      const attachments = await sendAttachments(http, urls, async (url) => {
        if (ctx.mediaReadFile && !/^https?:/i.test(url)) {
          return { buffer: await ctx.mediaReadFile(url), fileName: url.split(/[\\/]/).pop() };
        }
        return media.loadWebMedia(url, {
          maxBytes: MAX_MEDIA_BYTES,
          optimizeImages: false,
          ...(ctx.mediaLocalRoots ? { localRoots: ctx.mediaLocalRoots } : {}),
        });
      });
      return sendToConversation(ctx, attachments);
    },
  },
  messaging: {
    targetResolver: {
      looksLikeId: (raw: string) => CONVERSATION_ID.test(normalizeTarget(raw)),
      hint: "<conv_… conversation id from the relay>",
    },
  },
  status: {
    defaultRuntime: {
      accountId: "default",
      running: false,
      connected: false,
      lastError: null,
      lastConnectedAt: null,
      reconnectAttempts: 0,
    },
    buildAccountSnapshot: ({ account, runtime }) => ({
      ...runtime,
      accountId: account.accountId,
      enabled: account.enabled,
      configured: account.configured,
      running: runtime?.running ?? false,
      connected: runtime?.connected ?? false,
      lastError: runtime?.lastError ?? null,
    }),
  },
};
