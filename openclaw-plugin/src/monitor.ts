/**
 * Runs one relay account inside the gateway: keeps a connection to the relay
 * (WebSocket, or long polling), turns each delivery into an OpenClaw direct
 * message turn, and hands the reply back to the relay.
 *
 * Delivery guarantee: a delivery is acked only when its reply is stored on
 * the relay (the `send` acks it), or explicitly when the agent produced no
 * reply by design (a deliberate silent reply, a send policy, a blocked run).
 * A gateway that dies mid-turn leaves the delivery unacked, so the relay
 * delivers it again. OpenClaw remembers the messages it took (across its own
 * restarts) and skips such a redelivery as a duplicate: its restart recovery
 * answers instead, through `outbound.sendText`. So a turn that ran nothing
 * leaves the delivery open, and that later answer acks it (the relay's `send`
 * acks what the client holds of the conversation) under the delivery's own
 * idempotency key (see `awaitingRecovery`). The recovery's interim notice
 * ("I'm continuing your interrupted request…") is stored without acking (see
 * `isInterimNotice`), and so is any other send that answers nothing the
 * plugin holds (a proactive `openclaw message send`). A reply that could not
 * be stored because the relay was unreachable is kept and sent when its
 * delivery comes back (see `unsent`).
 */
import type { ChannelGatewayContext } from "openclaw/plugin-sdk/channel-contract";
import type { OpenClawConfig, PluginRuntime } from "openclaw/plugin-sdk/channel-core";
import { backoffDelay, CHANNEL_ID, type ClawrelayAccount } from "./config.js";
import { mediaContext, placeholderText, receiveAttachments, replyMediaUrls, sendAttachments, type InboundMedia } from "./media.js";
import { AUTH_CLOSE_CODES, RelayError, RelayHttp, RelaySocket, type RelayCancel, type RelayMessage, type Renewed } from "./relay-client.js";

type Ctx = ChannelGatewayContext<ClawrelayAccount>;
type ChannelRuntime = PluginRuntime["channel"];

/** What a turn needs to answer, whichever transport carried the delivery. */
interface ReplySink {
  send(m: RelayMessage, text: string, replyId: string, attachments: string[]): Promise<void>;
  ack(m: RelayMessage): Promise<void>;
  /** The turn of `m` is still running: its claim lasts (see `keepClaimed`). */
  renew(m: RelayMessage): Promise<Renewed>;
  /** Live extras; absent over HTTP polling. */
  delta?(m: RelayMessage, replyId: string, text: string): Promise<void>;
  typing?(m: RelayMessage): Promise<void>;
  progress?(m: RelayMessage, kind: string, data: unknown): Promise<void>;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });

/**
 * Deliveries whose turn OpenClaw skipped (a redelivery it had already taken),
 * by relay conversation id: the answer its restart recovery sends to that
 * conversation belongs to this delivery and reuses its idempotency key, so a
 * recovery send retried after another crash is not stored twice.
 */
const awaitingRecovery = new Map<string, string>();

/** A reply as stored on the relay: text, the stream id, attachment ids. */
interface KeptReply {
  text: string;
  replyId: string;
  attachments: string[];
}

/** The largest reply file read for upload (the relay's own limit applies too). */
export const MAX_MEDIA_BYTES = 64 * 1024 * 1024;

/**
 * Replies of turns that ran to the end but could not be stored on the relay
 * (it was unreachable), by relay message id. OpenClaw skips the redelivery
 * of such a message as a duplicate and its restart recovery has nothing to
 * resume, so the plugin sends the kept reply when the message comes back.
 * Bounded: the oldest are forgotten past `MAX_UNSENT` (in memory only; a
 * gateway restart forgets them too).
 */
const unsent = new Map<string, KeptReply>();
const MAX_UNSENT = 1000;

function keepUnsent(messageId: string, reply: KeptReply): void {
  unsent.set(messageId, reply);
  while (unsent.size > MAX_UNSENT) unsent.delete(unsent.keys().next().value!);
}

/** The idempotency key a send to `conversationId` should carry, if a skipped delivery awaits its answer there. */
export function recoveryKey(conversationId: string): string | undefined {
  return awaitingRecovery.get(conversationId);
}

/** The answer of a skipped delivery is stored (and so the delivery acked). */
export function recoveryAnswered(conversationId: string, key: string): void {
  if (awaitingRecovery.get(conversationId) === key) forgetRecovery(conversationId);
}

/** A turn answered the conversation: no recovery answer awaited there. */
function forgetRecovery(conversationId: string): void {
  awaitingRecovery.delete(conversationId);
  recoveryClaims.get(conversationId)?.();
  recoveryClaims.delete(conversationId);
}

/**
 * The claims kept while OpenClaw's restart recovery works on a skipped
 * delivery, by relay conversation id: stopped when its answer is stored.
 */
const recoveryClaims = new Map<string, () => void>();

/** The shortest pause between two renewals, and after a failed one. */
const MIN_RENEW_MS = 250;
const RETRY_RENEW_MS = 1000;

/**
 * Keeps the relay's claim on a delivery while its turn runs: renews it
 * (`renew`) at half of what is left of it, until `stop` is called, the
 * relay says there is nothing left to renew (the delivery was answered,
 * acked or moved), or the claim stops moving (the relay's
 * `max_lease_secs`: past it the message comes again, and it should). A
 * failed renewal is tried again a second later. Without `leaseUntil` (a
 * relay that does not renew) nothing is done. Returns `stop`.
 */
export function keepClaimed(
  leaseUntil: number | undefined,
  renew: () => Promise<Renewed>,
  now: () => number = Date.now,
): () => void {
  if (leaseUntil === undefined) return () => {};
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let until = leaseUntil;
  const schedule = (ms: number) => {
    if (stopped) return;
    timer = setTimeout(tick, Math.max(MIN_RENEW_MS, ms));
    timer.unref?.();
  };
  const tick = async () => {
    if (stopped) return;
    try {
      const r = await renew();
      if (r.renewed === 0 || r.leaseUntil === null || r.leaseUntil <= until) return;
      until = r.leaseUntil;
      schedule((until - now()) / 2);
    } catch {
      schedule(RETRY_RENEW_MS);
    }
  };
  schedule((until - now()) / 2);
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}

/**
 * What OpenClaw's restart recovery says before it resumes an interrupted
 * turn (openclaw 2026.9.6, `announceRestartRecoveryResumption`). It reaches
 * `outbound.sendText` like the answer that follows it, with nothing else to
 * tell the two apart, so it is recognised by its words. Its other notices
 * (the session could not be continued; a reply may not have arrived) end the
 * turn, so they ack like an answer. Should a later OpenClaw reword this one,
 * it would ack early again, as before this check: the answer still arrives,
 * only a second crash before it would lose the redelivery.
 */
const INTERIM_NOTICES = ["I'm continuing your interrupted request now"];

/** Whether a text sent through `outbound.sendText` is an interim notice, not an answer. */
export function isInterimNotice(text: string): boolean {
  const t = text.trimStart();
  return INTERIM_NOTICES.some((prefix) => t.startsWith(prefix));
}

/** Whether a dispatch that delivered nothing means "no reply, by design". */
export function silentByDesign(result: {
  queuedFinal?: boolean;
  counts?: Record<string, number>;
  deliberateSilentTerminalReply?: boolean;
  sendPolicyDenied?: boolean;
  beforeAgentRunBlocked?: boolean;
} | undefined): boolean {
  if (!result) return false;
  if (result.deliberateSilentTerminalReply || result.sendPolicyDenied || result.beforeAgentRunBlocked) return true;
  // The agent ran and finished (its final reply may have had no text).
  const counted = Object.values(result.counts ?? {}).reduce((a, b) => a + b, 0);
  return Boolean(result.queuedFinal) || counted > 0;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Runs tasks one at a time per key, each after the ones before it ended
 * (fulfilled or not). Keyed by relay message id, it makes a redelivery that
 * arrives while the message's first turn still runs (the relay died and came
 * back mid-turn, so the plugin reconnected) wait for that turn. That turn
 * cannot answer on the connection it came from; it keeps its reply, and the
 * waiting redelivery sends it on the new one. Without the wait the
 * redelivery reached OpenClaw first, which skipped it as already taken, and
 * the kept reply waited for the lease to expire.
 */
export class OneAtATime {
  private readonly last = new Map<string, Promise<void>>();

  run(key: string, task: () => Promise<void>): Promise<void> {
    const before = this.last.get(key);
    const p = before ? before.then(task, task) : task();
    this.last.set(key, p);
    const forget = () => {
      if (this.last.get(key) === p) this.last.delete(key);
    };
    p.then(forget, forget);
    return p;
  }

  /** How many keys have a task running or waiting. */
  get size(): number {
    return this.last.size;
  }
}

export class AccountMonitor {
  private attempts = 0;
  private authErrorReported = false;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly turns = new OneAtATime();
  /** The running turns, by relay message id: what a stop aborts. */
  private readonly running = new Map<string, AbortController>();
  /** Messages stopped lately (a turn waiting for its start never starts). */
  private readonly stopped = new Set<string>();

  constructor(
    private readonly ctx: Ctx,
    private readonly runtime: PluginRuntime | undefined,
  ) {}

  private get account(): ClawrelayAccount {
    return this.ctx.account;
  }

  private status(patch: Record<string, unknown>): void {
    this.ctx.setStatus({ ...this.ctx.getStatus(), accountId: this.account.accountId, ...patch });
  }

  private channel(): ChannelRuntime {
    const ch = (this.ctx.channelRuntime ?? this.runtime?.channel) as ChannelRuntime | undefined;
    if (!ch) throw new Error("the gateway provided no channel runtime");
    return ch;
  }

  private currentConfig(): OpenClawConfig {
    return (this.runtime?.config.current() ?? this.ctx.cfg) as OpenClawConfig;
  }

  /** Runs until the gateway stops the account. */
  async run(): Promise<void> {
    const { abortSignal, log } = this.ctx;
    this.status({ running: true, connected: false, lastStartAt: Date.now(), lastError: null });
    log?.info(`[clawrelay:${this.account.accountId}] starting (${this.account.transport}) → ${this.account.serverUrl}`);
    while (!abortSignal.aborted) {
      try {
        if (this.account.transport === "poll") await this.runPolling();
        else await this.runSocket();
      } catch (e) {
        this.onFailure(e);
      }
      if (abortSignal.aborted) break;
      const delay = this.authErrorReported
        ? this.account.reconnect.maxDelayMs
        : backoffDelay(this.account.reconnect, this.attempts);
      this.attempts += 1;
      this.status({ connected: false, reconnectAttempts: this.attempts, statusState: "reconnecting" });
      await sleep(delay, abortSignal);
    }
    await Promise.allSettled([...this.inFlight]);
    this.status({ running: false, connected: false, lastStopAt: Date.now(), statusState: "stopped" });
  }

  private onConnected(): void {
    this.attempts = 0;
    if (this.authErrorReported) this.ctx.log?.info(`[clawrelay:${this.account.accountId}] credentials accepted again`);
    this.authErrorReported = false;
    this.status({ connected: true, lastConnectedAt: Date.now(), lastError: null, statusState: "connected", reconnectAttempts: 0 });
  }

  private onFailure(e: unknown): void {
    const auth = e instanceof RelayError && e.permanent;
    const message = auth
      ? `the relay refused the token of account "${this.account.accountId}" (${errorText(e)}); check channels.clawrelay.token`
      : errorText(e);
    this.status({ connected: false, lastError: message, lastDisconnect: { at: Date.now(), error: message } });
    if (auth) {
      // Said once; retried quietly at the slowest pace until the token works.
      if (!this.authErrorReported) this.ctx.log?.error(`[clawrelay:${this.account.accountId}] ${message}`);
      this.authErrorReported = true;
    } else {
      this.ctx.log?.warn(`[clawrelay:${this.account.accountId}] connection lost: ${message}`);
    }
  }

  private async runSocket(): Promise<void> {
    const account = this.account;
    const socket = new RelaySocket(
      account.serverUrl,
      account.token,
      (m) => this.track(this.handle(m, sink)),
      (c) => this.cancel(c),
    );
    const sink: ReplySink = {
      send: async (m, text, replyId, attachments) => {
        await socket.request("send", {
          conversationId: m.conversationId,
          to: m.from,
          text,
          replyId,
          idempotencyKey: `oc-${m.id}`,
          ...(attachments.length ? { attachments } : {}),
        });
      },
      ack: async (m) => {
        await socket.request("ack", { ids: [m.id] });
      },
      renew: async (m) => (await socket.request("renew", { conversationId: m.conversationId })) as Renewed,
      delta: async (m, replyId, text) => {
        await socket.request("reply.delta", { conversationId: m.conversationId, replyId, text });
      },
      typing: async (m) => {
        await socket.request("typing", { conversationId: m.conversationId });
      },
      progress: async (m, kind, data) => {
        await socket.request("progress", { conversationId: m.conversationId, kind, data: data ?? null });
      },
    };
    try {
      await socket.open(account.maxInFlight, this.ctx.abortSignal);
    } catch (e) {
      const closed = await Promise.race([socket.closed, sleep(50, this.ctx.abortSignal).then(() => undefined)]);
      if (closed && AUTH_CLOSE_CODES.has(closed.code)) throw new RelayError("unauthorized", `closed with ${closed.code}`, 401);
      throw e;
    }
    this.onConnected();
    const closed = await socket.closed;
    if (this.ctx.abortSignal.aborted) return;
    if (AUTH_CLOSE_CODES.has(closed.code)) throw new RelayError("unauthorized", `closed with ${closed.code} ${closed.reason}`, 401);
    throw new RelayError("closed", `the relay closed the connection (${closed.code}${closed.reason ? ` ${closed.reason}` : ""})`);
  }

  private async runPolling(): Promise<void> {
    const account = this.account;
    const http = new RelayHttp(account.serverUrl, account.token);
    const sink: ReplySink = {
      send: async (m, text, _replyId, attachments) => {
        await http.send(m.conversationId, m.from, text, `oc-${m.id}`, true, attachments);
      },
      ack: async (m) => http.ack([m.id]),
      renew: async (m) => http.renew(m.conversationId),
    };
    let connected = false;
    while (!this.ctx.abortSignal.aborted) {
      const room = account.maxInFlight - this.inFlight.size;
      if (room <= 0) {
        await Promise.race([...this.inFlight]);
        continue;
      }
      let batch: RelayMessage[];
      try {
        const polled = await http.poll(25, room, this.ctx.abortSignal);
        for (const c of polled.cancelled) this.cancel(c);
        batch = polled.messages;
      } catch (e) {
        if (this.ctx.abortSignal.aborted) return;
        throw e;
      }
      if (!connected) {
        connected = true;
        this.onConnected();
      }
      for (const m of batch) this.track(this.handle(m, sink));
    }
  }

  /**
   * The user stopped these turns on the relay: abort them (OpenClaw ends the
   * agent run, its model request included). They send nothing; the relay
   * keeps what was streamed and never delivers them again.
   */
  cancel(c: RelayCancel): void {
    for (const id of c.messageIds) {
      unsent.delete(id);
      this.stopped.add(id);
      if (this.stopped.size > 1000) this.stopped.delete(this.stopped.values().next().value as string);
      const turn = this.running.get(id);
      if (turn && !turn.signal.aborted) {
        this.ctx.log?.info(`[clawrelay] message ${id}: stopped by the user, its turn is aborted`);
        turn.abort(new Error("stopped by the user"));
      }
    }
  }

  private track(p: Promise<void>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  /** Stores the reply to `m` (which acks it) and forgets it as unsent. */
  private async sendReply(m: RelayMessage, sink: ReplySink, reply: KeptReply): Promise<void> {
    try {
      await sink.send(m, reply.text, reply.replyId, reply.attachments);
    } catch (e) {
      // The same key was used for a different text: a retried turn whose
      // first reply already reached the relay. That reply stands.
      if (e instanceof RelayError && e.code === "idempotency_key_reused") await sink.ack(m);
      else throw e;
    }
    unsent.delete(m.id);
  }

  /** Downloads the attachments of `m` into OpenClaw's media store. */
  private async receiveMedia(m: RelayMessage): Promise<InboundMedia[]> {
    if (!m.attachments?.length) return [];
    const http = new RelayHttp(this.account.serverUrl, this.account.token);
    const store = this.channel().media;
    return receiveAttachments(http, m.attachments, (bytes, contentType, fileName) =>
      store.saveMediaBuffer(bytes, contentType, "inbound", bytes.length, fileName),
    );
  }

  /** Uploads the media of a reply to the relay; answers their attachment ids. */
  private async sendMedia(urls: string[]): Promise<string[]> {
    if (!urls.length) return [];
    const media = this.runtime?.media;
    if (!media) throw new Error("the gateway provided no media runtime to read the reply's files");
    const http = new RelayHttp(this.account.serverUrl, this.account.token);
    return sendAttachments(http, urls, (url) => media.loadWebMedia(url, { maxBytes: MAX_MEDIA_BYTES, optimizeImages: false }));
  }

  /** Whether the conversation holds an answer (not an interim notice) stored after `m`. */
  private async answeredSince(m: RelayMessage): Promise<boolean> {
    const http = new RelayHttp(this.account.serverUrl, this.account.token);
    const messages = await http.conversationMessages(m.conversationId);
    return messages.some((x) => x.direction === "outbound" && x.timestamp >= m.timestamp && !isInterimNotice(x.text));
  }

  /**
   * Handles a delivery once any earlier delivery of the same message is
   * done, keeping its claim while the turn runs (a turn with tools can take
   * minutes, longer than a lease).
   */
  private handle(m: RelayMessage, sink: ReplySink): Promise<void> {
    return this.turns.run(m.id, async () => {
      const stop = keepClaimed(m.leaseUntil, () => sink.renew(m));
      try {
        await this.turn(m, sink);
      } finally {
        stop();
      }
    });
  }

  /** One relay delivery → one OpenClaw turn → one reply (or an ack). */
  private async turn(m: RelayMessage, sink: ReplySink): Promise<void> {
    this.status({ lastMessageAt: Date.now() });
    if (this.stopped.has(m.id)) {
      this.ctx.log?.info(`[clawrelay] message ${m.id}: stopped by the user before its turn began`);
      return;
    }
    const stop = new AbortController();
    this.running.set(m.id, stop);
    try {
      await this.runTurn(m, sink, stop.signal);
    } finally {
      if (this.running.get(m.id) === stop) this.running.delete(m.id);
    }
  }

  private async runTurn(m: RelayMessage, sink: ReplySink, stopped: AbortSignal): Promise<void> {
    const { log } = this.ctx;
    const forward = this.account.forward;
    const replyId = `oc-${m.id}`;
    const kept = unsent.get(m.id);
    if (kept) {
      // The turn ran, its reply did not reach the relay: send that reply.
      try {
        await this.sendReply(m, sink, kept);
        log?.info(`[clawrelay] message ${m.id} (attempt ${m.attempt ?? "?"}): its kept reply is stored now`);
      } catch (e) {
        log?.error(`[clawrelay] message ${m.id}: its kept reply could not be stored, it is tried again at the next redelivery: ${errorText(e)}`);
      }
      return;
    }
    try {
      const channel = this.channel();
      const cfg = this.currentConfig();
      const route = channel.routing.resolveAgentRoute({
        cfg,
        channel: CHANNEL_ID,
        accountId: this.account.accountId,
        // One agent session per relay conversation (one app user's thread).
        peer: { kind: "direct", id: m.conversationId },
        dmScope: "per-channel-peer",
      });
      // The user's files, into OpenClaw's media store. A failure leaves the
      // delivery unacked: it comes again.
      const media = await this.receiveMedia(m);
      const body = m.text || placeholderText(media);
      const inbound = channel.reply.finalizeInboundContext({
        ...mediaContext(media),
        Body: body,
        BodyForAgent: body,
        RawBody: m.text,
        CommandBody: m.text,
        From: `${CHANNEL_ID}:${m.from}`,
        To: m.conversationId,
        SessionKey: route.sessionKey,
        AccountId: route.accountId,
        ChatType: "direct",
        SenderId: m.from,
        SenderName: m.from,
        Provider: CHANNEL_ID,
        Surface: CHANNEL_ID,
        MessageSid: m.id,
        Timestamp: m.timestamp,
        OriginatingChannel: CHANNEL_ID,
        OriginatingTo: m.conversationId,
        CommandAuthorized: false,
      });

      const parts: string[] = [];
      const mediaUrls: string[] = [];
      let streamed = "";
      const live = async (what: string, f: (() => Promise<void>) | undefined) => {
        try {
          await f?.();
        } catch (e) {
          log?.debug?.(`[clawrelay] ${what} not forwarded: ${errorText(e)}`);
        }
      };
      const result = await channel.reply.dispatchReplyWithBufferedBlockDispatcher({
        ctx: inbound,
        cfg,
        dispatcherOptions: {
          deliver: async (payload, info) => {
            if (info.kind === "tool") {
              if (forward.toolProgress && payload.text) {
                await live("tool result", sink.progress && (() => sink.progress!(m, "tool_result", { text: payload.text })));
              }
              return;
            }
            if (payload.text?.trim()) parts.push(payload.text.trim());
            for (const url of replyMediaUrls(payload)) if (!mediaUrls.includes(url)) mediaUrls.push(url);
          },
          onError: (err, info) => {
            log?.warn(`[clawrelay] ${info.kind} reply failed: ${errorText(err)}`);
          },
          onReplyStart: async () => {
            if (forward.typing) await live("typing", sink.typing && (() => sink.typing!(m)));
          },
        },
        replyOptions: {
          abortSignal: stopped,
          onPartialReply: async (p) => {
            if (!forward.streaming || !sink.delta) return;
            const text = p.text ?? "";
            let piece = p.delta ?? "";
            if (!piece && text.startsWith(streamed)) piece = text.slice(streamed.length);
            if (!piece) return;
            streamed += piece;
            await live("delta", () => sink.delta!(m, replyId, piece));
          },
          onToolStart: async (p) => {
            if (forward.toolProgress) {
              await live("tool start", sink.progress && (() => sink.progress!(m, "tool_start", { name: p.name ?? null, phase: p.phase ?? null })));
            }
          },
          onReasoningStream: async (p) => {
            if (forward.toolProgress && p.text) {
              await live("reasoning", sink.progress && (() => sink.progress!(m, "reasoning_stream", { text: p.text })));
            }
          },
        },
      });

      if (stopped.aborted) {
        // Stopped by the user: the relay ended the delivery and keeps what
        // was streamed. Nothing to send, nothing to ack.
        log?.info(`[clawrelay] message ${m.id}: its turn ended after the user stopped it; nothing is sent`);
        return;
      }
      const text = parts.join("\n\n");
      if (text || mediaUrls.length) {
        forgetRecovery(m.conversationId);
        // The agent's files, uploaded before the reply that carries them.
        const attachments = await this.sendMedia(mediaUrls);
        // Kept until the relay has it: if the relay is unreachable now, the
        // redelivery of `m` sends this reply (OpenClaw would skip the turn).
        const reply = { text, replyId, attachments };
        keepUnsent(m.id, reply);
        await this.sendReply(m, sink, reply);
      } else if (silentByDesign(result)) {
        forgetRecovery(m.conversationId);
        await sink.ack(m);
      } else {
        // OpenClaw ran nothing: a redelivery of a message it already took
        // (its de-duplication outlives its restarts). Its restart recovery
        // sends the answer; until then the delivery stays open, and if the
        // gateway dies again it comes back once more. If that answer is
        // stored already (it came before this redelivery), it acks now.
        if (await this.answeredSince(m)) {
          await sink.ack(m);
          log?.info(`[clawrelay] message ${m.id} (attempt ${m.attempt ?? "?"}) was answered by OpenClaw's recovery already; acked`);
          return;
        }
        awaitingRecovery.set(m.conversationId, replyId);
        // OpenClaw's recovery works on it now: the claim lasts until its
        // answer is stored (or the relay's cap ends it).
        recoveryClaims.get(m.conversationId)?.();
        recoveryClaims.set(m.conversationId, keepClaimed(m.leaseUntil, () => sink.renew(m)));
        log?.info(
          `[clawrelay] message ${m.id} (attempt ${m.attempt ?? "?"}) was skipped by OpenClaw as already taken; its answer will come from OpenClaw's recovery, the delivery stays open until then`,
        );
      }
    } catch (e) {
      if (stopped.aborted || (e instanceof RelayError && e.code === "reply_stopped")) {
        log?.info(`[clawrelay] message ${m.id}: its turn ended after the user stopped it (${errorText(e)})`);
        return;
      }
      // Not acked: the relay delivers it again after the lease, or at once
      // to the next connection if this one drops.
      log?.error(`[clawrelay] message ${m.id} not answered, it will be redelivered: ${errorText(e)}`);
    }
  }
}
