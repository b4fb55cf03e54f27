/**
 * Attachments between the relay and OpenClaw.
 *
 * Inbound: each attachment of a delivery is downloaded from the relay, its
 * bytes checked against the sha256 the relay lists, and saved into
 * OpenClaw's media store; the turn then carries them as its media
 * (`media` facts and the `MediaPath(s)`/`MediaType(s)` fields channel
 * plugins of OpenClaw 2026.9 fill), so the model sees the user's images.
 *
 * Outbound: the media of an agent's reply (`mediaUrl`/`mediaUrls`: paths
 * or URLs, read through OpenClaw's media loader and its local-roots policy,
 * bytes unchanged) are uploaded to the relay, and the reply carries their
 * attachment ids.
 */
import { createHash } from "node:crypto";
import type { RelayAttachment, RelayHttp } from "./relay-client.js";

/** One inbound file as OpenClaw's media facts describe it. */
export interface InboundMedia {
  path: string;
  contentType: string;
  fileName: string;
  sizeBytes: number;
}

/** Saves bytes into OpenClaw's media store; answers where. */
export type SaveMedia = (bytes: Buffer, contentType: string, fileName: string) => Promise<{ path: string; contentType?: string }>;

/** Reads one reply media reference (path or URL). */
export type LoadMedia = (url: string) => Promise<{ buffer: Buffer; contentType?: string; fileName?: string }>;

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Downloads and stores the attachments of a delivery, in order. */
export async function receiveAttachments(http: RelayHttp, attachments: RelayAttachment[], save: SaveMedia): Promise<InboundMedia[]> {
  const media: InboundMedia[] = [];
  for (const a of attachments) {
    const bytes = await http.download(a.url);
    const hash = sha256Hex(bytes);
    if (hash !== a.sha256) throw new Error(`attachment ${a.id} arrived changed (sha256 ${hash}, the relay lists ${a.sha256})`);
    const saved = await save(bytes, a.mime, a.name);
    media.push({ path: saved.path, contentType: saved.contentType ?? a.mime, fileName: a.name, sizeBytes: bytes.length });
  }
  return media;
}

/** The kind OpenClaw gives media of this type. */
export function mediaKind(contentType: string): "image" | "audio" | "video" | "document" {
  if (contentType.startsWith("image/")) return "image";
  if (contentType.startsWith("audio/")) return "audio";
  if (contentType.startsWith("video/")) return "video";
  return "document";
}

/** The fields of an inbound context that carry `media` (none when empty). */
export function mediaContext(media: InboundMedia[]): Record<string, unknown> {
  const first = media[0];
  if (!first) return {};
  return {
    media: media.map((m) => ({ path: m.path, contentType: m.contentType, kind: mediaKind(m.contentType), fileName: m.fileName, sizeBytes: m.sizeBytes })),
    MediaPath: first.path,
    MediaType: first.contentType,
    MediaPaths: media.map((m) => m.path),
    MediaTypes: media.map((m) => m.contentType),
  };
}

/** The text a turn shows for a message that is only attachments. */
export function placeholderText(media: InboundMedia[]): string {
  return media.map((m) => `<media:${mediaKind(m.contentType)}>`).join(" ");
}

/** The media references of a reply payload, in order, without repeats. */
export function replyMediaUrls(payload: { mediaUrl?: string; mediaUrls?: string[] }): string[] {
  const urls = [...(payload.mediaUrls ?? []), ...(payload.mediaUrl ? [payload.mediaUrl] : [])];
  return [...new Set(urls.filter((u) => typeof u === "string" && u.trim() !== ""))];
}

/** Uploads reply media to the relay; answers the attachment ids, in order. */
export async function sendAttachments(http: RelayHttp, urls: string[], load: LoadMedia): Promise<string[]> {
  const ids: string[] = [];
  for (const url of urls) {
    const loaded = await load(url);
    const name = loaded.fileName ?? url.split(/[\\/]/).pop() ?? "attachment";
    // No type claimed: the relay sniffs it from the bytes.
    const uploaded = await http.upload(loaded.buffer, name);
    ids.push(uploaded.id);
  }
  return ids;
}
