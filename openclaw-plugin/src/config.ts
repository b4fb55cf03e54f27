/**
 * `channels.clawrelay` configuration: one relay account at the top level
 * (`serverUrl`, `token`, ...) and/or named accounts under `accounts.<id>`,
 * which inherit every setting but the token from the top level.
 */
import type { OpenClawConfig } from "openclaw/plugin-sdk/channel-core";

export const CHANNEL_ID = "clawrelay";
export const DEFAULT_ACCOUNT_ID = "default";

export type Transport = "ws" | "poll";

export interface ReconnectSettings {
  /** First delay after a dropped connection. */
  baseDelayMs: number;
  /** Upper bound of the exponential backoff. */
  maxDelayMs: number;
  /** Random spread applied to each delay, 0..1 (0.3 = ±30 %). */
  jitter: number;
}

export interface ForwardSettings {
  /** Stream partial reply text to the app as `reply.delta` events. */
  streaming: boolean;
  /** Forward tool and reasoning progress as `progress` events. */
  toolProgress: boolean;
  /** Send `typing` when a reply starts. */
  typing: boolean;
}

export interface ClawrelayAccount {
  accountId: string;
  enabled: boolean;
  configured: boolean;
  serverUrl: string;
  token: string;
  transport: Transport;
  /** Unacked deliveries the relay pushes at once (WebSocket transport). */
  maxInFlight: number;
  reconnect: ReconnectSettings;
  forward: ForwardSettings;
}

type Section = Record<string, unknown>;

function isObject(v: unknown): v is Section {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function section(cfg: OpenClawConfig): Section {
  const channels = (cfg as { channels?: unknown }).channels;
  const own = isObject(channels) ? channels[CHANNEL_ID] : undefined;
  return isObject(own) ? own : {};
}

function str(v: unknown, fallback = ""): string {
  return typeof v === "string" ? v.trim() : fallback;
}

function num(v: unknown, fallback: number, min: number, max: number): number {
  return typeof v === "number" && Number.isFinite(v) ? Math.min(max, Math.max(min, v)) : fallback;
}

function bool(v: unknown, fallback: boolean): boolean {
  return typeof v === "boolean" ? v : fallback;
}

function named(cfg: OpenClawConfig): Section {
  const accounts = section(cfg).accounts;
  return isObject(accounts) ? accounts : {};
}

export function listAccountIds(cfg: OpenClawConfig): string[] {
  const top = section(cfg);
  const ids = Object.keys(named(cfg));
  if (str(top.serverUrl) || str(top.token) || ids.length === 0) {
    ids.unshift(DEFAULT_ACCOUNT_ID);
  }
  return [...new Set(ids)];
}

export function resolveAccount(cfg: OpenClawConfig, accountId?: string | null): ClawrelayAccount {
  const id = accountId?.trim() || DEFAULT_ACCOUNT_ID;
  const top = section(cfg);
  const own = id === DEFAULT_ACCOUNT_ID ? top : { ...top, ...(isObject(named(cfg)[id]) ? (named(cfg)[id] as Section) : {}) };
  const reconnect = isObject(own.reconnect) ? own.reconnect : {};
  const forward = isObject(own.forward) ? own.forward : {};
  const serverUrl = str(own.serverUrl).replace(/\/+$/, "");
  // A named account never borrows the default account's token.
  const token = id === DEFAULT_ACCOUNT_ID ? str(top.token) : str((named(cfg)[id] as Section | undefined)?.token);
  const transport: Transport = own.transport === "poll" ? "poll" : "ws";
  return {
    accountId: id,
    enabled: bool(own.enabled, true),
    configured: Boolean(serverUrl && token),
    serverUrl,
    token,
    transport,
    maxInFlight: num(own.maxInFlight, 10, 1, 1000),
    reconnect: {
      baseDelayMs: num(reconnect.baseDelayMs, 500, 50, 600_000),
      maxDelayMs: num(reconnect.maxDelayMs, 30_000, 100, 3_600_000),
      jitter: num(reconnect.jitter, 0.3, 0, 1),
    },
    forward: {
      streaming: bool(forward.streaming, true),
      toolProgress: bool(forward.toolProgress, true),
      typing: bool(forward.typing, true),
    },
  };
}

/** Delay before reconnect attempt `attempt` (0-based): exponential, capped, jittered. */
export function backoffDelay(settings: ReconnectSettings, attempt: number, random: () => number = Math.random): number {
  const exp = Math.min(settings.maxDelayMs, settings.baseDelayMs * 2 ** Math.min(attempt, 30));
  const spread = exp * settings.jitter * (random() * 2 - 1);
  return Math.max(0, Math.round(Math.min(settings.maxDelayMs, exp + spread)));
}
