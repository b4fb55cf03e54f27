/**
 * The relay's API as the plugin uses it: HTTP (send, ack, long poll, read a
 * conversation) and the WebSocket agent session (docs/protocol.md of
 * clawrelay). Node's built-in fetch and WebSocket; no dependencies.
 */

/** A file a message carries (download `url` with the same token). */
export interface RelayAttachment {
  id: string;
  name: string;
  mime: string;
  size: number;
  sha256: string;
  url: string;
}

/** A delivery as the relay hands it to an agent. */
export interface RelayMessage {
  id: string;
  conversationId: string;
  appId?: string;
  from: string;
  text: string;
  timestamp: number;
  attempt?: number;
  /** When this delivery's claim ends (Unix ms) unless answered or renewed. */
  leaseUntil?: number;
  attachments?: RelayAttachment[];
}

/**
 * A stop: the user ended the turns of these messages (the relay's
 * `POST /conversations/{id}/stop`). Drop their work and send nothing; they
 * are never delivered again.
 */
export interface RelayCancel {
  conversationId: string;
  messageIds: string[];
  /** The reply being streamed when the stop came, if one was. */
  replyId?: string;
}

/** What a poll got: deliveries, and stops of turns claimed before. */
export interface Polled {
  messages: RelayMessage[];
  cancelled: RelayCancel[];
}

/** What a renewal of the claims in a conversation did. */
export interface Renewed {
  /** Claims renewed: 0 when none is held there any more. */
  renewed: number;
  /** When they end now (Unix ms). */
  leaseUntil: number | null;
}

/** An error answer of the relay; `permanent` when retrying cannot help (bad token, bad request). */
export class RelayError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = "RelayError";
  }

  get permanent(): boolean {
    return this.status === 401 || this.status === 403 || this.code === "unauthorized" || this.code === "forbidden";
  }

  get unauthorized(): boolean {
    return this.status === 401 || this.code === "unauthorized";
  }
}

/** WebSocket close codes of the relay that mean "your credentials are wrong". */
export const AUTH_CLOSE_CODES = new Set([4001, 4003]);

interface ErrorBody {
  error?: { code?: string; message?: string };
}

export class RelayHttp {
  constructor(
    private readonly serverUrl: string,
    private readonly token: string,
  ) {}

  private async call<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<T> {
    const init: RequestInit = {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...headers,
      },
    };
    if (body !== undefined) init.body = JSON.stringify(body);
    if (signal) init.signal = signal;
    const res = await fetch(`${this.serverUrl}${path}`, init);
    const text = await res.text();
    const json: unknown = text ? JSON.parse(text) : {};
    if (!res.ok) {
      const err = (json as ErrorBody).error;
      throw new RelayError(err?.code ?? `http_${res.status}`, err?.message ?? `HTTP ${res.status}`, res.status);
    }
    return json as T;
  }

  async poll(waitSecs: number, max: number, signal?: AbortSignal): Promise<Polled> {
    const r = await this.call<{ messages: RelayMessage[]; cancelled?: RelayCancel[] }>(
      "GET",
      `/poll?wait=${waitSecs}&max=${max}`,
      undefined,
      {},
      signal,
    );
    return { messages: r.messages, cancelled: r.cancelled ?? [] };
  }

  /**
   * Stores a message for the user of a conversation. It acks what this
   * client holds of the conversation unless `ack` is false (a notice that
   * answers nothing).
   */
  async send(conversationId: string, to: string, text: string, idempotencyKey?: string, ack = true, attachments: string[] = []): Promise<{ id: string }> {
    const headers: Record<string, string> = idempotencyKey ? { "idempotency-key": idempotencyKey } : {};
    const body: Record<string, unknown> = { conversationId, to, text };
    if (!ack) body.ack = false;
    if (attachments.length) body.attachments = attachments;
    const r = await this.call<{ message: { id: string } }>("POST", "/send", body, headers);
    return r.message;
  }

  /** The bytes of an attachment (`url` as a message lists it). */
  async download(url: string): Promise<Buffer> {
    const res = await fetch(new URL(url, this.serverUrl), { headers: { authorization: `Bearer ${this.token}` } });
    if (!res.ok) {
      const json = (await res.json().catch(() => ({}))) as ErrorBody;
      throw new RelayError(json.error?.code ?? `http_${res.status}`, json.error?.message ?? `HTTP ${res.status}`, res.status);
    }
    return Buffer.from(await res.arrayBuffer());
  }

  /** Uploads a file; the relay sniffs its type from the bytes. */
  async upload(bytes: Buffer, name: string, contentType?: string): Promise<RelayAttachment> {
    const res = await fetch(`${this.serverUrl}/attachments?filename=${encodeURIComponent(name)}`, {
      method: "POST",
      headers: { authorization: `Bearer ${this.token}`, "content-type": contentType ?? "application/octet-stream" },
      body: new Blob([new Uint8Array(bytes)]),
    });
    const json = (await res.json().catch(() => ({}))) as RelayAttachment & ErrorBody;
    if (!res.ok) throw new RelayError(json.error?.code ?? `http_${res.status}`, json.error?.message ?? `HTTP ${res.status}`, res.status);
    return json;
  }

  async ack(ids: string[]): Promise<void> {
    await this.call("POST", "/ack", { ids });
  }

  /** The agent is still working on the conversation: its claims there last. */
  async renew(conversationId: string): Promise<Renewed> {
    return this.call<Renewed>("POST", "/renew", { conversationId });
  }

  /** A conversation's messages, oldest first (the relay's whole history of it). */
  async conversationMessages(conversationId: string): Promise<Array<{ direction: string; text: string; timestamp: number }>> {
    const r = await this.call<{ messages: Array<{ direction: string; text: string; timestamp: number }> }>(
      "GET",
      `/conversations/${encodeURIComponent(conversationId)}`,
    );
    return r.messages;
  }

  async conversationUser(conversationId: string): Promise<string> {
    const r = await this.call<{ userId: string }>("GET", `/conversations/${encodeURIComponent(conversationId)}`);
    return r.userId;
  }
}

interface ResFrame {
  type: "res";
  id: string;
  ok: boolean;
  payload?: unknown;
  error?: { code: string; message: string };
}

interface EventFrame {
  type: "event";
  event: string;
  payload: unknown;
  seq: number;
}

export interface SocketClose {
  code: number;
  reason: string;
}

/**
 * One agent session on `GET /ws`. `open` resolves after a successful
 * `connect`; `closed` resolves when the socket ends, whatever the cause.
 */
export class RelaySocket {
  private ws: WebSocket | undefined;
  private nextId = 0;
  private readonly pending = new Map<string, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private closeResolve: ((c: SocketClose) => void) | undefined;
  readonly closed: Promise<SocketClose>;

  constructor(
    private readonly serverUrl: string,
    private readonly token: string,
    private readonly onDelivery: (m: RelayMessage) => void,
    private readonly onCancel: (c: RelayCancel) => void = () => {},
    private readonly requestTimeoutMs = 30_000,
  ) {
    this.closed = new Promise((resolve) => {
      this.closeResolve = resolve;
    });
  }

  /** Opens the socket and sends `connect`; rejects with the relay's refusal. */
  async open(maxInFlight: number, signal: AbortSignal): Promise<void> {
    const url = `${this.serverUrl.replace(/^http/, "ws")}/ws`;
    const ws = new WebSocket(url);
    this.ws = ws;
    const onAbort = () => this.close(1000, "stopping");
    signal.addEventListener("abort", onAbort, { once: true });
    ws.addEventListener("message", (ev) => this.onFrame(ev.data));
    ws.addEventListener("close", (ev) => {
      signal.removeEventListener("abort", onAbort);
      for (const [, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new RelayError("closed", `socket closed (${ev.code} ${ev.reason})`));
      }
      this.pending.clear();
      this.closeResolve?.({ code: ev.code, reason: ev.reason });
    });
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new RelayError("unreachable", `cannot reach ${url}`)), { once: true });
      void this.closed.then((c) => reject(new RelayError("closed", `socket closed before connect (${c.code})`)));
    });
    await this.request("connect", { role: "agent", token: this.token, maxInFlight });
  }

  request(method: string, params: unknown): Promise<unknown> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new RelayError("closed", "socket is not open"));
    }
    const id = String(++this.nextId);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RelayError("timeout", `no answer to ${method} in ${this.requestTimeoutMs} ms`));
      }, this.requestTimeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ type: "req", id, method, params }));
    });
  }

  close(code = 1000, reason = ""): void {
    try {
      this.ws?.close(code, reason);
    } catch {
      // already closing
    }
  }

  private onFrame(data: unknown): void {
    if (typeof data !== "string") return;
    let frame: ResFrame | EventFrame;
    try {
      frame = JSON.parse(data) as ResFrame | EventFrame;
    } catch {
      return;
    }
    if (frame.type === "res") {
      const p = this.pending.get(String(frame.id));
      if (!p) return;
      this.pending.delete(String(frame.id));
      clearTimeout(p.timer);
      if (frame.ok) p.resolve(frame.payload);
      else p.reject(new RelayError(frame.error?.code ?? "error", frame.error?.message ?? "request failed"));
    } else if (frame.type === "event" && frame.event === "message") {
      this.onDelivery(frame.payload as RelayMessage);
    } else if (frame.type === "event" && frame.event === "cancel") {
      this.onCancel(frame.payload as RelayCancel);
    }
  }
}
