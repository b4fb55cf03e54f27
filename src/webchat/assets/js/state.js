// What the page's modules share: the page's state and a shorthand for its
// elements.

export const $ = (id) => document.getElementById(id);

// Messages of a conversation read per page of history.
export const PAGE = 50;
// The image types the relay serves inline, shown as images.
export const INLINE = ["image/png", "image/jpeg", "image/gif", "image/webp"];

export const state = {
  token: null, // bearer session token (embedded), or null (cookie)
  csrf: null, // the login's CSRF token (cookie)
  user: null,
  expiresAt: 0,
  cursor: null, // where the stream resumes (null: not yet known)
  stream: null, // AbortController of the open stream
  backoff: 500,
  refreshTimer: null,
  activityTimer: null,
  activityFor: null, // the conversation the activity line speaks of (null: any)
  current: null, // the conversation shown, and the one messages go to
  convs: [], // the user's conversations, as GET /conversations lists them
  ended: new Set(), // conversations that expired
  listTimer: null,
  byId: new Map(), // message id -> <li>
  streaming: new Map(), // replyId -> <li> being written
  settled: new Set(), // replyIds whose whole reply is stored (or stopped)
  working: new Set(), // conversations whose agent is answering (Stop applies)
  picked: [], // files chosen for the next message
  waitingFor: null, // conversation whose message waits for an agent to connect
  assigned: new Set(), // conversations an agent took after they waited
  pages: new Map(), // conversation -> { before, loading } of its history read so far
};
