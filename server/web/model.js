// What the client knows, with no DOM: chats, their messages and comments, read
// markers and unread counts, scheduled messages and join requests. Server pushes go
// through `apply(method, params)`, one handler per event in `HANDLERS`: a new event
// (message.edited, presence...) is one more entry there.

export const sameUser = (a, b) => typeof a === "string" && typeof b === "string" && a.toLowerCase() === b.toLowerCase();

/** What an update touched, for the view to redraw. */
function changed(fields = {}) {
  return { chats: false, chat: null, thread: null, scheduled: false, requests: null, unknownChat: null, notice: null, ...fields };
}

export class Model {
  constructor(me = null) {
    this.me = me;
    this.chats = new Map(); // id -> chat value (protocol.md 5) + `activity`
    this.messages = new Map(); // chat id -> Map(seq -> message)
    this.comments = new Map(); // message id -> Map(comment id -> comment)
    this.scheduled = new Map(); // id -> scheduled
    this.requests = new Map(); // chat id -> Map(user key -> {user, ts})
    this.bannedUntil = 0;
  }

  // -- snapshots fetched from the server ------------------------------------------------

  /** The chats of `status`; messages of chats no longer ours are forgotten. */
  setChats(chats) {
    const known = this.chats;
    this.chats = new Map(chats.map((chat) => [chat.id, { ...chat, activity: known.get(chat.id)?.activity ?? 0 }]));
    for (const id of [...this.messages.keys()]) if (!this.chats.has(id)) this.messages.delete(id);
  }

  /** Messages from `history` or `unread`: merged by seq, so repeats are harmless. */
  addMessages(chatId, messages) {
    for (const message of messages) this.storeMessage(message);
    this.recount(chatId);
  }

  setScheduled(list) {
    this.scheduled = new Map(list.map((item) => [item.id, item]));
  }

  setRequests(chatId, requests) {
    this.requests.set(chatId, new Map(requests.map((r) => [r.user.toLowerCase(), r])));
  }

  setComments(messageId, comments) {
    const map = this.comments.get(messageId) ?? new Map();
    for (const comment of comments) map.set(comment.id, comment);
    this.comments.set(messageId, map);
  }

  // -- reading ------------------------------------------------------------------------

  /** Chats, newest activity first (a chat joined just now counts as activity). */
  sortedChats() {
    return [...this.chats.values()].sort(
      (a, b) => b.activity - a.activity || (a.kind === "general" ? -1 : b.kind === "general" ? 1 : a.title.localeCompare(b.title)),
    );
  }

  messagesOf(chatId) {
    return [...(this.messages.get(chatId)?.values() ?? [])].sort((a, b) => a.seq - b.seq);
  }

  /** The newest loaded message of a chat, without sorting them all. */
  lastMessage(chatId) {
    let last = null;
    for (const message of this.messages.get(chatId)?.values() ?? []) if (!last || message.seq > last.seq) last = message;
    return last;
  }

  commentsOf(messageId) {
    return [...(this.comments.get(messageId)?.values() ?? [])].sort((a, b) => a.ts - b.ts || (a.id < b.id ? -1 : 1));
  }

  findMessage(messageId) {
    for (const byseq of this.messages.values()) for (const message of byseq.values()) if (message.id === messageId) return message;
    return null;
  }

  directChatWith(user) {
    return [...this.chats.values()].find((chat) => chat.kind === "direct" && sameUser(chat.title, user)) ?? null;
  }

  totalUnread() {
    let total = 0;
    for (const chat of this.chats.values()) total += chat.unread;
    return total;
  }

  /** Own messages to the general chat in the current rate window (as far as known). */
  generalSendsThisWindow(limits, now = Date.now()) {
    const period = limits.rate_period * 1000;
    const window = Math.floor(now / period);
    return this.messagesOf("general").filter((m) => sameUser(m.author, this.me) && Math.floor(m.ts / period) === window).length;
  }

  // -- changes --------------------------------------------------------------------------

  storeMessage(message) {
    if (!this.messages.has(message.chat)) this.messages.set(message.chat, new Map());
    const byseq = this.messages.get(message.chat);
    const isNew = !byseq.has(message.seq);
    byseq.set(message.seq, message);
    const chat = this.chats.get(message.chat);
    if (chat) {
      chat.last_seq = Math.max(chat.last_seq, message.seq);
      chat.activity = Math.max(chat.activity, message.ts);
    }
    return isNew;
  }

  /** Unread = live messages after the marker: counted from what is loaded when all
   * of them are, else moved by what is known. */
  recount(chatId, hint = null) {
    const chat = this.chats.get(chatId);
    if (!chat) return;
    if (chat.read_seq >= chat.last_seq) {
      chat.unread = 0;
      return;
    }
    const loaded = this.messages.get(chatId);
    let complete = loaded !== undefined;
    let count = 0;
    for (let seq = chat.read_seq + 1; complete && seq <= chat.last_seq; seq += 1) {
      if (loaded.has(seq)) count += 1;
      else complete = false;
    }
    if (complete) chat.unread = count;
    else if (hint !== null) chat.unread = Math.max(0, chat.unread + hint);
  }

  /** Drop what has expired by `now`; whether anything went. */
  expire(now = Date.now()) {
    let gone = false;
    for (const [chatId, byseq] of this.messages) {
      for (const [seq, message] of byseq) {
        if (message.expires_at !== null && message.expires_at <= now) {
          byseq.delete(seq);
          this.comments.delete(message.id);
          const chat = this.chats.get(chatId);
          if (chat && seq > chat.read_seq) chat.unread = Math.max(0, chat.unread - 1);
          gone = true;
        }
      }
    }
    return gone;
  }

  /** Move the marker as the server did; nothing when it would go back. */
  markRead(chatId, readSeq) {
    const chat = this.chats.get(chatId);
    if (!chat || readSeq <= chat.read_seq) return false;
    const before = chat.read_seq;
    chat.read_seq = readSeq;
    let passed = 0;
    const loaded = this.messages.get(chatId);
    for (let seq = before + 1; seq <= readSeq; seq += 1) if (!loaded || loaded.has(seq)) passed += 1;
    this.recount(chatId, -passed);
    return true;
  }

  apply(method, params) {
    const handler = HANDLERS[method];
    return handler ? handler(this, params) : changed();
  }
}

const HANDLERS = {
  message(model, { message }) {
    const chat = model.chats.get(message.chat);
    const isNew = model.storeMessage(message);
    if (!chat) return changed({ unknownChat: message.chat, chats: true });
    if (sameUser(message.author, model.me)) {
      model.markRead(message.chat, message.seq); // posting reads (protocol.md 5)
    } else if (isNew && message.seq > chat.read_seq) {
      model.recount(message.chat, +1);
    }
    return changed({ chats: true, chat: message.chat });
  },

  comment(model, { comment }) {
    const map = model.comments.get(comment.message) ?? new Map();
    const isNew = !map.has(comment.id);
    map.set(comment.id, comment);
    model.comments.set(comment.message, map);
    const message = model.findMessage(comment.message);
    if (message && isNew) message.comments += 1;
    return changed({ chat: comment.chat, thread: comment.message });
  },

  read(model, { chat, read_seq }) {
    model.markRead(chat, read_seq);
    return changed({ chats: true, chat });
  },

  scheduled(model, { scheduled }) {
    model.scheduled.set(scheduled.id, scheduled);
    return changed({ scheduled: true });
  },

  "scheduled.cancelled"(model, { id }) {
    model.scheduled.delete(id);
    return changed({ scheduled: true });
  },

  "chat.joined"(model, { chat }) {
    const known = model.chats.get(chat.id);
    model.chats.set(chat.id, { ...chat, activity: known?.activity || Date.now() });
    const news = known || sameUser(chat.owner, model.me) ? null : `You joined ${chat.title}`;
    return changed({ chats: true, chat: chat.id, notice: news });
  },

  "chat.join_request"(model, { chat, user }) {
    const map = model.requests.get(chat) ?? new Map();
    map.set(user.toLowerCase(), { user, ts: Date.now() });
    model.requests.set(chat, map);
    const title = model.chats.get(chat)?.title ?? chat;
    return changed({ chats: true, requests: chat, notice: `${user} asks to join ${title}` });
  },

  "chat.declined"(model, { title }) {
    return changed({ notice: `Your request to join ${title} was declined` });
  },

  "chat.left"(model, { chat }) {
    model.chats.delete(chat);
    model.messages.delete(chat);
    return changed({ chats: true, chat });
  },

  banned(model, { until }) {
    model.bannedUntil = until;
    return changed({ notice: "banned" });
  },
};

export const EVENTS = Object.freeze(Object.keys(HANDLERS));
