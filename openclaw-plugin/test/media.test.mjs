// Unit tests of the attachment helpers (node --test, on dist/).
import assert from "node:assert/strict";
import { test } from "node:test";
import { mediaContext, placeholderText, receiveAttachments, replyMediaUrls, sendAttachments, sha256Hex } from "../dist/media.js";

const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);

test("attachments are downloaded, checked and saved in order", async () => {
  const http = { download: async (url) => (url.endsWith("a") ? png : Buffer.from("notes")) };
  const saved = [];
  const media = await receiveAttachments(
    http,
    [
      { id: "att_a", name: "a.png", mime: "image/png", size: png.length, sha256: sha256Hex(png), url: "/attachments/a" },
      { id: "att_b", name: "b.txt", mime: "text/plain", size: 5, sha256: sha256Hex(Buffer.from("notes")), url: "/attachments/b" },
    ],
    async (bytes, contentType, name) => {
      saved.push(name);
      return { path: `/media/${name}`, contentType };
    },
  );
  assert.deepEqual(saved, ["a.png", "b.txt"]);
  const ctx = mediaContext(media);
  assert.deepEqual(ctx.MediaPaths, ["/media/a.png", "/media/b.txt"]);
  assert.deepEqual(ctx.MediaTypes, ["image/png", "text/plain"]);
  assert.equal(ctx.MediaPath, "/media/a.png");
  assert.deepEqual(ctx.media.map((m) => m.kind), ["image", "document"]);
  assert.equal(placeholderText(media), "<media:image> <media:document>");
  assert.deepEqual(mediaContext([]), {});
});

test("bytes that do not match the listed sha256 are refused", async () => {
  const http = { download: async () => Buffer.from("tampered") };
  await assert.rejects(
    receiveAttachments(http, [{ id: "att_a", name: "a", mime: "image/png", size: 1, sha256: sha256Hex(png), url: "/x" }], async () => ({ path: "/p" })),
    /arrived changed/,
  );
});

test("reply media are uploaded once each, in order", async () => {
  assert.deepEqual(replyMediaUrls({ mediaUrls: ["/a", "/b"], mediaUrl: "/a" }), ["/a", "/b"]);
  assert.deepEqual(replyMediaUrls({ mediaUrl: "" }), []);
  const uploads = [];
  const http = { upload: async (bytes, name) => (uploads.push(name), { id: `att_${uploads.length}` }) };
  const ids = await sendAttachments(http, ["/w/report.txt", "https://x/y/pic.png"], async (url) => ({ buffer: Buffer.from(url) }));
  assert.deepEqual(ids, ["att_1", "att_2"]);
  assert.deepEqual(uploads, ["report.txt", "pic.png"]);
});
