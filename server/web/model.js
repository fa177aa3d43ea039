// What the client knows, with no DOM: chats, their messages and comments, read
// markers, unread and mention counts, scheduled messages, join requests and who is
// online. Server pushes go
// through `apply(method, params)`, one handler per event in `HANDLERS`: a new event
// (message.edited, presence...) is one more entry there.

export const sameUser = (a, b) => typeof a === "string" && typeof b === "string" && a.toLowerCase() === b.toLowerCase();

/** What an update touched, for the view to redraw. */
function changed(fields = {}) {
  return { chats: false, chat: null, thread: null, scheduled: false, requests: null, unknownChat: null, notice: null, recount: null, presence: null, deleted: null, ...fields };
}

export class Model {
  constructor(me = null) {
    this.me = me;
    this.chats = new Map(); // id -> chat value (protocol.md 5) + `activity`
    this.messages = new Map(); // chat id -> Map(seq -> message)
    this.comments = new Map(); // message id -> Map(comment id -> comment)
    this.scheduled = new Map(); // id -> scheduled
    this.requests = new Map(); // chat id -> Map(user key -> {user, ts})
    this.gone = new Map(); // chat id -> Set(seq) deleted: holes that count as known
    this.presence = new Map(); // user key -> {user, online, last_seen}
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

  setPresence(users) {
    for (const entry of users) this.presence.set(entry.user.toLowerCase(), entry);
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

  presenceOf(user) {
    return typeof user === "string" ? (this.presence.get(user.toLowerCase()) ?? null) : null;
  }

  /** Whether a message calls the signed-in user by name (`@me`). */
  mentionsMe(message) {
    return (message.mentions ?? []).some((name) => sameUser(name, this.me));
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

  /** Unread (and mentions: unread ones calling me) = live messages after the
   * marker: counted from what is loaded when all of them are (a deleted seq is a
   * known hole), else moved by what is known. */
  recount(chatId, hint = null, mentionHint = 0) {
    const chat = this.chats.get(chatId);
    if (!chat) return;
    if (chat.read_seq >= chat.last_seq) {
      chat.unread = 0;
      chat.mentions = 0;
      return;
    }
    const loaded = this.messages.get(chatId);
    const gone = this.gone.get(chatId);
    let complete = loaded !== undefined;
    let count = 0;
    let mentions = 0;
    for (let seq = chat.read_seq + 1; complete && seq <= chat.last_seq; seq += 1) {
      const message = loaded.get(seq);
      if (message) {
        count += 1;
        if (this.mentionsMe(message)) mentions += 1;
      } else if (!gone?.has(seq)) complete = false;
    }
    if (complete) {
      chat.unread = count;
      chat.mentions = mentions;
    } else {
      if (hint !== null) chat.unread = Math.max(0, chat.unread + hint);
      chat.mentions = Math.min(chat.unread, Math.max(0, (chat.mentions ?? 0) + mentionHint));
    }
  }

  /** Drop what has expired by `now`; whether anything went. */
  expire(now = Date.now()) {
    let gone = false;
    for (const [chatId, byseq] of this.messages) {
      for (const message of byseq.values()) {
        if (message.expires_at !== null && message.expires_at <= now) {
          this.forget(chatId, message);
          gone = true;
        }
      }
    }
    return gone;
  }

  /** A loaded message went (expired, deleted): out of the counts if it was in them. */
  forget(chatId, message) {
    this.messages.get(chatId)?.delete(message.seq);
    this.comments.delete(message.id);
    const chat = this.chats.get(chatId);
    if (chat && message.seq > chat.read_seq) {
      chat.unread = Math.max(0, chat.unread - 1);
      if (this.mentionsMe(message)) chat.mentions = Math.max(0, (chat.mentions ?? 0) - 1);
    }
  }

  /** Move the marker as the server did; nothing when it would go back. */
  markRead(chatId, readSeq) {
    const chat = this.chats.get(chatId);
    if (!chat || readSeq <= chat.read_seq) return false;
    const before = chat.read_seq;
    chat.read_seq = readSeq;
    let passed = 0;
    let passedMentions = 0;
    const loaded = this.messages.get(chatId);
    for (let seq = before + 1; seq <= readSeq; seq += 1) {
      const message = loaded?.get(seq);
      if (!loaded || message) passed += 1;
      if (message && this.mentionsMe(message)) passedMentions += 1;
    }
    this.recount(chatId, -passed, -passedMentions);
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
      model.recount(message.chat, +1, model.mentionsMe(message) ? +1 : 0);
    }
    return changed({ chats: true, chat: message.chat });
  },

  "message.edited"(model, { message }) {
    const byseq = model.messages.get(message.chat);
    const before = byseq?.get(message.seq);
    if (!before) return changed(); // not loaded: history brings it as it is now
    byseq.set(message.seq, message);
    const chat = model.chats.get(message.chat);
    const calls = model.mentionsMe(message) ? 1 : 0;
    const called = model.mentionsMe(before) ? 1 : 0;
    if (chat && message.seq > chat.read_seq && calls !== called) model.recount(message.chat, 0, calls - called);
    return changed({ chats: true, chat: message.chat, thread: message.id });
  },

  "message.deleted"(model, { chat: chatId, seq, id }) {
    if (!model.gone.has(chatId)) model.gone.set(chatId, new Set());
    if (model.gone.get(chatId).has(seq)) return changed(); // told twice (the call's own answer)
    model.gone.get(chatId).add(seq);
    const message = model.messages.get(chatId)?.get(seq);
    const chat = model.chats.get(chatId);
    if (message) model.forget(chatId, message);
    else if (chat && seq > chat.read_seq) model.recount(chatId);
    // A deletion of one never seen (a resume skips the message it deleted) may still
    // have been in a count from `status`: whether it was, only the server knows.
    const unsure = !message && chat && seq > chat.read_seq && chat.unread > 0;
    return changed({ chats: true, chat: chatId, thread: id, deleted: id, recount: unsure ? chatId : null });
  },

  presence(model, entry) {
    model.setPresence([{ user: entry.user, online: entry.online, last_seen: entry.last_seen }]);
    return changed({ chats: true, presence: entry.user });
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
