// The web client's screens: sign-in, the chat list, a chat, and side panels
// (thread, scheduled, group, forms). The wire is protocol.js, the data model.js;
// this module only draws them and turns clicks and keys into calls.

import { h, fill, reconcile } from "./dom.js";
import { Model, sameUser } from "./model.js";
import { PANELS, USER_NAME, presenceDot } from "./panels.js";
import { Connection, ConnectionLost, ErrorCode, RpcError, serverUrl, upload } from "./protocol.js";
import { chatLabel, describeError, formatDuration, formatSize, formatTime, presenceText } from "./text.js";

const SESSION_KEY = "messenger.session";
const SOON_MS = 10 * 60 * 1000; // a message this close to expiry shows its time left
const LOW_ALLOWANCE = 5; // general-chat sends left at which the count is shown
const UNREAD_PAGES = 10; // pages of 100 unread messages loaded when a chat is opened
const PRESENCE_BATCH = 100; // names per `presence` call (protocol.md 14.4)
const PHONE = window.matchMedia("(max-width: 720px)");

const root = document.getElementById("app");
const connection = new Connection(serverUrl(location), { storage: localStorage });
let model = new Model();
let ui = null; // the main screen's elements, once signed in

const view = {
  chat: null, // the open chat's id
  draftUser: null, // a direct chat not started yet: the other user's name
  newFrom: null, // seq where the "new messages" line goes in the open chat
  olderMore: false, // whether older messages can be loaded
  panel: null, // {kind, arg, refresh}
  found: null, // the id of the message a search result opened, highlighted
  everOnline: false, // whether this page has been connected (a banner only after that)
};

// -- session ------------------------------------------------------------------------------

function savedSession() {
  try {
    return JSON.parse(localStorage.getItem(SESSION_KEY));
  } catch {
    return null;
  }
}

function saveSession(session) {
  if (session) localStorage.setItem(SESSION_KEY, JSON.stringify({ user: session.user, token: session.token }));
  else localStorage.removeItem(SESSION_KEY);
}

async function boot() {
  connection.on("event", onEvent);
  connection.on("state", onState);
  connection.on("login", (result) => onLogin(result).catch(reportError));
  connection.on("outbox", () => ui && renderMessages());
  connection.on("unsent", (item, error) => toast(`Not sent: ${describeError(error, "send")}`, "error"));
  window.addEventListener("online", () => connection.reconnectNow());
  document.addEventListener("keydown", onGlobalKey);
  document.addEventListener("visibilitychange", () => ui && markOpenChatRead());
  setInterval(tick, 15_000);
  const saved = savedSession();
  if (!saved) return showSignIn();
  showMain(saved.user);
  try {
    await connection.signIn({ user: saved.user, token: saved.token });
  } catch (error) {
    if (error instanceof RpcError) {
      saveSession(null);
      return showSignIn("This device was signed out. Sign in again.");
    }
    connection.session = { user: saved.user, token: saved.token, device: null };
    connection.lost(); // the server is away: keep trying
  }
}

function onState(state) {
  if (state === "signed-out") {
    saveSession(null);
    showSignIn("This device was signed out.");
    return;
  }
  if (state === "online") view.everOnline = true;
  if (!ui) return;
  // Not while the page first connects: only once a connection it had is lost.
  ui.banner.hidden = state === "online" || !connection.session || !view.everOnline;
  fill(ui.banner, state === "connecting" ? "Reconnecting…" : "Connection lost. Reconnecting…");
  root.dataset.connection = state;
  renderMessages(); // pending messages say whether they are on their way
}

async function onLogin(result) {
  saveSession(connection.session);
  if (!ui || !sameUser(ui.user, result.user)) showMain(result.user);
  if (result.resumed === true) markOpenChatRead(); // what was pushed while signing in, and is shown
  else await refetch();
  await refreshPresence(); // presence is not resumed: asked again after every login
}

/** The people I share these chats with (all of mine by default). */
async function contactsIn(chats = [...model.chats.values()]) {
  const names = new Map();
  for (const chat of chats) if (chat.kind === "direct") names.set(chat.title.toLowerCase(), chat.title);
  const groups = chats.filter((chat) => chat.kind === "group");
  const members = await Promise.all(groups.map((chat) => connection.call("chat.members", { chat: chat.id }).then((r) => r.members, () => [])));
  for (const name of members.flat()) if (!sameUser(name, model.me)) names.set(name.toLowerCase(), name);
  return [...names.values()];
}

/** Who of `users` (by default everyone I share a direct chat or group with) is online. */
async function refreshPresence(users = null) {
  users ??= await contactsIn();
  for (let start = 0; start < users.length; start += PRESENCE_BATCH) {
    try {
      model.setPresence((await connection.call("presence", { users: users.slice(start, start + PRESENCE_BATCH) })).users);
    } catch (error) {
      console.warn("presence", error); // a chat left meanwhile (-32002): the next login asks again
    }
  }
  if (!ui) return;
  renderChats();
  renderHeader();
  view.panel?.refresh?.({ presence: true });
}

/** Unread and mention counts from the server, when only it can tell. */
async function refreshCounts() {
  model.setChats((await connection.call("status")).chats);
  renderChats();
}

/** Everything shown, from the server: after a login that did not resume. */
async function refetch() {
  const status = await connection.call("status");
  model.me = status.user;
  model.setChats(status.chats);
  const [unread, scheduled] = await Promise.all([connection.call("unread"), connection.call("scheduled")]);
  for (const chat of unread.chats) model.addMessages(chat.chat, chat.messages);
  model.setScheduled(scheduled.scheduled);
  const quiet = [...model.chats.values()].filter((chat) => !model.messages.has(chat.id) && chat.last_seq > 0);
  const owned = [...model.chats.values()].filter((chat) => chat.kind === "group" && sameUser(chat.owner, model.me));
  await Promise.all([
    ...quiet.map(async (chat) => model.addMessages(chat.id, (await connection.call("history", { chat: chat.id, limit: 1 })).messages)),
    ...owned.map(async (chat) => model.setRequests(chat.id, (await connection.call("chat.requests", { chat: chat.id })).requests)),
  ]);
  if (view.chat && !model.chats.has(view.chat)) view.chat = null;
  if (!view.chat && !view.draftUser) view.chat = "general";
  await loadChat(view.chat);
  renderAll();
  markOpenChatRead();
}

function onEvent(method, params) {
  if (!ui) return;
  const change = model.apply(method, params);
  if (change.unknownChat) refreshChats().catch(reportError);
  if (change.recount) refreshCounts().catch(reportError);
  if (method === "chat.joined") contactsIn([params.chat]).then(refreshPresence).catch(reportError);
  if (change.presence) renderHeader();
  if (method === "chat.left" && view.chat === params.chat) openChat("general");
  if (method === "chat.joined" && view.draftUser && params.chat.kind === "direct") view.draftUser = null;
  if (change.notice === "banned") {
    toast(`You are banned from sending until ${formatTime(params.until)}.`, "error");
    renderNotices(Date.now());
  }
  else if (change.notice) toast(change.notice);
  if (change.chats) renderChats();
  if (change.chat && change.chat === view.chat) {
    renderMessages();
    markOpenChatRead();
  }
  if (view.panel?.refresh) view.panel.refresh(change);
}

async function refreshChats() {
  const status = await connection.call("status");
  model.setChats(status.chats);
  for (const chat of status.chats) {
    if (!model.messages.has(chat.id) && chat.last_seq > 0) {
      model.addMessages(chat.id, (await connection.call("history", { chat: chat.id })).messages);
    }
  }
  if (view.draftUser) {
    const chat = model.directChatWith(view.draftUser);
    if (chat) {
      view.draftUser = null;
      view.chat = chat.id;
    }
  }
  renderAll();
  const strangers = [...model.chats.values()].filter((chat) => chat.kind === "direct" && !model.presenceOf(chat.title));
  if (strangers.length) await refreshPresence(await contactsIn(strangers)); // new contacts
}

// -- sign-in screen ---------------------------------------------------------------------

function showSignIn(message = "") {
  ui = null;
  model = new Model();
  view.chat = view.draftUser = view.panel = null;
  view.everOnline = false;
  root.removeAttribute("aria-busy");
  const error = h("p", { class: "form-error", role: "alert", id: "signin-error" }, message);
  const user = h("input", { id: "signin-user", name: "user", autocomplete: "username", required: true, maxlength: 32, autocapitalize: "none", spellcheck: "false" });
  const password = h("input", { id: "signin-password", name: "password", type: "password", autocomplete: "current-password", required: true, minlength: 8, maxlength: 1024 });
  const signIn = h("button", { type: "submit", class: "primary", value: "login" }, "Sign in");
  const register = h("button", { type: "submit", value: "register" }, "Create account");
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "messenger"),
    h("label", { for: "signin-user" }, "User name"),
    user,
    h("label", { for: "signin-password" }, "Password"),
    password,
    error,
    h("div", { class: "row" }, signIn, register),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = event.submitter?.value === "register" ? "register" : "login";
    const name = user.value.trim();
    if (!USER_NAME.test(name)) return fill(error, "A user name is 1 to 32 letters, digits, _ . or -.");
    if (password.value.length < 8) return fill(error, "A password has at least 8 characters.");
    fill(error, action === "register" ? "Creating the account…" : "Signing in…");
    form.setAttribute("aria-busy", "true");
    try {
      const result = await connection.signIn({
        user: name,
        password: password.value,
        register: action === "register",
        deviceName: browserName(),
      });
      saveSession({ user: result.user, token: result.token });
    } catch (failure) {
      fill(error, describeError(failure, action));
      password.select();
    } finally {
      form.removeAttribute("aria-busy");
    }
  });
  fill(root, h("main", { class: "signin-screen" }, form));
  root.dataset.screen = "signin";
  user.focus();
}

function browserName() {
  const agent = navigator.userAgent;
  const browser = /Firefox\//.test(agent) ? "Firefox" : /Edg\//.test(agent) ? "Edge" : /Chrom/.test(agent) ? "Chromium" : /Safari\//.test(agent) ? "Safari" : "Browser";
  return `${browser} (web)`;
}

// -- main screen --------------------------------------------------------------------------

function showMain(user) {
  model = new Model(user);
  root.removeAttribute("aria-busy");
  root.dataset.screen = "main";
  root.dataset.view = "list";
  const banner = h("div", { class: "banner", role: "status", hidden: true }, "Connection lost. Reconnecting…");
  const chats = h("ul", { class: "chat-list", "aria-label": "Chats" });
  const messages = h("ol", { class: "messages", "aria-label": "Messages", "aria-live": "polite" });
  const title = h("h2", { class: "chat-title", id: "chat-title" });
  const subtitle = h("span", { class: "chat-subtitle" });
  const chatActions = h("div", { class: "chat-actions" });
  const notices = h("div", { class: "chat-notices" });
  const input = h("textarea", {
    id: "composer",
    rows: 1,
    placeholder: "Write a message",
    "aria-label": "Message",
    "aria-describedby": "composer-hint",
    onkeydown: onComposerKey,
    oninput: () => autoGrow(input),
  });
  const fileInput = h("input", { type: "file", class: "visually-hidden", tabindex: "-1", "aria-hidden": "true", onchange: onFileChosen });
  const progress = h("div", { class: "upload", hidden: true });
  const composerError = h("p", { class: "form-error", role: "alert" });
  const composer = h(
    "form",
    { class: "composer", onsubmit: (event) => (event.preventDefault(), sendFromComposer()) },
    progress,
    composerError,
    h(
      "div",
      { class: "composer-row" },
      h("button", { type: "button", class: "icon", title: "Send a file", "aria-label": "Send a file", onclick: () => fileInput.click() }, "Attach"),
      input,
      h("button", { type: "button", class: "icon", title: "Schedule", "aria-label": "Schedule this message", onclick: () => openPanel("schedule") }, "Later"),
      h("button", { type: "submit", class: "primary" }, "Send"),
      fileInput,
    ),
    h("p", { class: "hint", id: "composer-hint" }, "Enter sends, Shift+Enter starts a new line."),
  );
  const panelTitle = h("h2", { id: "panel-title" });
  const panelBody = h("div", { class: "panel-body" });
  const panel = h(
    "aside",
    { class: "panel", hidden: true, "aria-labelledby": "panel-title" },
    h("header", {}, panelTitle, h("button", { class: "icon close", "aria-label": "Close (Esc)", title: "Close (Esc)", onclick: closePanel }, "✕")),
    panelBody,
  );
  const toasts = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
  const older = h("button", { class: "link older", hidden: true, onclick: loadOlder }, "Load earlier messages");
  const layout = h(
    "div",
    { class: "layout" },
    h(
      "nav",
      { class: "sidebar", "aria-label": "Chats" },
      h(
        "div",
        { class: "sidebar-actions" },
        h("button", { class: "search", onclick: () => openPanel("search"), title: "Search (Ctrl+K or /)", "aria-keyshortcuts": "Control+K Meta+K /" }, "Search messages", h("kbd", {}, "Ctrl+K")),
        h("button", { onclick: () => openPanel("direct") }, "New direct chat"),
        h("button", { onclick: () => openPanel("group") }, "New group"),
        h("button", { onclick: () => openPanel("join") }, "Join by link"),
        h("button", { onclick: () => openPanel("scheduled") }, "Scheduled"),
      ),
      chats,
    ),
    h(
      "main",
      { class: "chat", "aria-labelledby": "chat-title" },
      h(
        "header",
        { class: "chat-header" },
        h("button", { class: "icon back", "aria-label": "Back to chats", onclick: showList }, "‹"),
        h("div", { class: "chat-heading" }, title, subtitle),
        chatActions,
      ),
      h("div", { class: "scroller" }, older, messages),
      notices,
      composer,
    ),
    panel,
  );
  fill(
    root,
    h(
      "header",
      { class: "topbar" },
      h("strong", { class: "brand" }, "messenger"),
      h("span", { class: "me" }, "Signed in as ", h("b", {}, user)),
      h("button", { class: "signout", onclick: signOut }, "Sign out"),
    ),
    banner,
    layout,
    toasts,
  );
  const newLine = h("li", { class: "new-line", role: "separator" }, h("span", {}, "New messages"));
  const empty = h("li", { class: "empty" });
  ui = { user, banner, chats, messages, newLine, empty, title, subtitle, chatActions, notices, input, fileInput, progress, composerError, panel, panelTitle, panelBody, toasts, older, elements: new Map() };
  renderAll();
}

function renderAll() {
  if (!ui) return;
  renderChats();
  renderHeader();
  renderMessages();
  view.panel?.refresh?.({});
}

function renderChats() {
  const items = model.sortedChats().map((chat) => {
    const requests = model.requests.get(chat.id)?.size ?? 0;
    const last = model.lastMessage(chat.id);
    const presence = chat.kind === "direct" ? model.presenceOf(chat.title) : null;
    return h(
      "li",
      {},
      h(
        "button",
        {
          class: "chat-item",
          dataset: { chat: chat.id, kind: chat.kind },
          "aria-current": chat.id === view.chat ? "true" : null,
          onclick: () => openChat(chat.id),
        },
        h("span", { class: "chat-kind", "aria-hidden": "true" }, chat.kind === "general" ? "#" : chat.kind === "direct" ? "@" : "+"),
        presence ? presenceDot(presence) : null,
        h(
          "span",
          { class: "chat-summary" },
          h("span", { class: "chat-name" }, chat.kind === "direct" ? chat.title : chatLabel(chat)),
          last ? h("span", { class: "chat-preview" }, `${sameUser(last.author, model.me) ? "You" : last.author}: ${last.text || last.file?.name || ""}`) : null,
        ),
        h(
          "span",
          { class: "chat-side" },
          last ? h("time", { class: "chat-time" }, formatTime(last.ts)) : null,
          requests ? h("span", { class: "requests", title: "Join requests" }, `${requests} ask`) : null,
          chat.mentions ? h("span", { class: "mention-badge", title: "You are mentioned", "aria-label": `${chat.mentions} mentioning you` }, "@") : null,
          chat.unread ? h("span", { class: "badge", "aria-label": `${chat.unread} unread` }, String(chat.unread)) : null,
        ),
      ),
    );
  });
  // Rebuilt whole (it is short), so the focus goes back to the chat that had it.
  const focused = document.activeElement?.closest?.(".chat-item")?.dataset.chat;
  fill(ui.chats, items);
  if (focused) ui.chats.querySelector(`[data-chat="${CSS.escape(focused)}"]`)?.focus();
  const unread = model.totalUnread();
  document.title = unread ? `(${unread}) messenger` : "messenger";
}

function renderHeader() {
  if (!ui) return;
  const chat = model.chats.get(view.chat);
  if (view.draftUser) {
    fill(ui.title, `@${view.draftUser}`);
    fill(ui.subtitle, "New direct chat");
    fill(ui.chatActions, reportButton(view.draftUser));
    return;
  }
  fill(ui.title, chat ? chatLabel(chat) : "");
  const presence = chat?.kind === "direct" ? model.presenceOf(chat.title) : null;
  const direct = presence ? [presenceDot(presence), ` ${presenceText(presence)}`] : "Direct chat";
  const subtitle = !chat ? "" : chat.kind === "general" ? "Everyone" : chat.kind === "direct" ? direct : `Group of ${chat.owner}`;
  fill(ui.subtitle, subtitle);
  const actions = [];
  if (chat?.kind === "group") actions.push(h("button", { onclick: () => openPanel("members", chat.id) }, sameUser(chat.owner, model.me) ? "Manage group" : "Members"));
  if (chat?.kind === "direct") actions.push(reportButton(chat.title));
  fill(ui.chatActions, actions);
}

function reportButton(user) {
  return h("button", { onclick: () => openPanel("report", user) }, "Report");
}

function showList() {
  root.dataset.view = "list";
  ui.chats.querySelector("[aria-current]")?.focus();
}

// -- a chat ---------------------------------------------------------------------------------

async function openChat(chatId) {
  const chat = model.chats.get(chatId);
  if (!chat) return;
  if (view.chat !== chatId) view.found = null;
  view.chat = chatId;
  view.draftUser = null;
  view.newFrom = chat.unread > 0 ? chat.read_seq + 1 : null;
  root.dataset.view = "chat";
  ui.elements.clear();
  renderChats();
  renderHeader();
  renderMessages();
  ui.input.focus();
  try {
    await loadChat(chatId);
  } catch (error) {
    reportError(error);
  }
  if (view.chat !== chatId) return;
  renderMessages(true);
  markOpenChatRead();
}

async function openDirect(user) {
  const chat = model.directChatWith(user);
  if (chat) return openChat(chat.id);
  await connection.call("history", { user }); // a user that does not exist: -32003
  view.chat = null;
  view.draftUser = user;
  view.newFrom = null;
  root.dataset.view = "chat";
  renderAll();
  ui.input.focus();
}

async function loadChat(chatId) {
  if (!chatId) return;
  const chat = model.chats.get(chatId);
  if (!chat) return;
  if (chat.unread > 0) {
    // Some context before the first unread one, then every unread one (the marker
    // then moves over what was shown, with no gap).
    const before = await connection.call("history", { chat: chatId, before: chat.read_seq + 1, limit: 10 });
    model.addMessages(chatId, before.messages);
    view.olderMore = before.has_more;
    let after = chat.read_seq;
    for (let pages = 0; pages < UNREAD_PAGES; pages += 1) {
      const page = await connection.call("history", { chat: chatId, after, limit: 100 });
      model.addMessages(chatId, page.messages);
      if (!page.has_more || !page.messages.length) break;
      after = page.messages.at(-1).seq;
    }
  } else {
    const page = await connection.call("history", { chat: chatId });
    model.addMessages(chatId, page.messages);
    view.olderMore = page.has_more;
  }
}

async function loadOlder() {
  const chatId = view.chat;
  const first = model.messagesOf(chatId)[0];
  if (!first) return;
  const page = await connection.call("history", { chat: chatId, before: first.seq });
  model.addMessages(chatId, page.messages);
  view.olderMore = page.has_more;
  renderMessages();
}

/** Open a chat at one of its messages (a search result), loading the messages
 * from it to the ones already shown so there is no gap between them. */
async function showMessage(chatId, messageId, seq) {
  await openChat(chatId);
  if (view.chat !== chatId) return;
  if (!model.messages.get(chatId)?.has(seq)) {
    const first = model.messagesOf(chatId)[0];
    const from = Math.max(0, seq - 6); // a few before it, for context
    let after = from;
    for (let pages = 0; pages < UNREAD_PAGES; pages += 1) {
      const page = await connection.call("history", { chat: chatId, after, limit: 100 });
      model.addMessages(chatId, page.messages);
      const last = page.messages.at(-1);
      if (!page.has_more || !last || (first && last.seq >= first.seq)) break;
      after = last.seq;
    }
    view.olderMore = from > 0;
  }
  view.found = messageId;
  if (PHONE.matches) closePanel(); // the panel covers the chat there
  renderMessages();
  const element = ui.messages.querySelector(`[data-id="${CSS.escape(messageId)}"]`);
  if (!element) return toast("That message is no longer there.");
  element.scrollIntoView({ block: "center" });
  element.focus();
}

function markOpenChatRead() {
  const chat = model.chats.get(view.chat);
  if (!chat || document.visibilityState !== "visible" || connection.state !== "online") return;
  const last = model.lastMessage(chat.id);
  if (!last || last.seq <= chat.read_seq) return;
  model.markRead(chat.id, last.seq);
  renderChats();
  connection.call("read", { chat: chat.id, seq: last.seq }).catch(() => {}); // the event settles it
}

function pendingHere() {
  return connection.outbox.filter((item) =>
    view.draftUser ? sameUser(item.params.user, view.draftUser) : item.params.chat === view.chat && !item.params.send_at,
  );
}

/** Redraw the open chat's messages, reusing the elements of unchanged ones. */
function renderMessages(scrollToEnd = false) {
  if (!ui) return;
  const scroller = ui.messages.parentElement;
  const atEnd = scrollToEnd || scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  const scrolled = scroller.scrollTop;
  const now = Date.now();
  const items = [];
  const messages = view.draftUser ? [] : model.messagesOf(view.chat);
  let lineDrawn = false;
  for (const message of messages) {
    if (!lineDrawn && view.newFrom !== null && message.seq >= view.newFrom && !sameUser(message.author, model.me)) {
      items.push(ui.newLine);
      lineDrawn = true;
    }
    items.push(messageElement(message, now));
  }
  for (const item of pendingHere()) items.push(pendingElement(item));
  if (!items.length) items.push(fill(ui.empty, view.draftUser ? `Say hello to ${view.draftUser}.` : "No messages yet."));
  reconcile(ui.messages, items);
  const used = new Set(items);
  for (const [key, { element }] of ui.elements) if (!used.has(element)) ui.elements.delete(key);
  ui.older.hidden = !view.olderMore || view.draftUser !== null;
  renderNotices(now);
  scroller.scrollTop = atEnd ? scroller.scrollHeight : scrolled; // reading back: stay there
}

function messageElement(message, now) {
  const soon = message.expires_at !== null && message.expires_at - now < SOON_MS;
  const found = view.found === message.id;
  const key = `${message.id}/${message.comments}/${soon ? Math.ceil((message.expires_at - now) / 60000) : ""}/${message.edited_at}/${found}`;
  const cached = ui.elements.get(message.id);
  if (cached?.key === key) return cached.element;
  const mine = sameUser(message.author, model.me);
  const chat = model.chats.get(message.chat);
  const deletable = mine || (chat?.kind === "group" && sameUser(chat.owner, model.me));
  const classes = ["message", mine ? "mine" : "", model.mentionsMe(message) ? "mentioned" : "", found ? "found" : ""];
  const element = h(
    "li",
    { class: classes.filter(Boolean).join(" "), dataset: { seq: message.seq, id: message.id }, tabindex: found ? "-1" : null },
    h(
      "div",
      { class: "meta" },
      h("span", { class: "author" }, message.author),
      h("time", { datetime: new Date(message.ts).toISOString() }, formatTime(message.ts, now)),
      message.edited_at ? h("span", { class: "edited", title: `edited ${formatTime(message.edited_at, now)}` }, "edited") : null,
      soon ? h("span", { class: "expiry" }, `expires in ${formatDuration((message.expires_at - now) / 1000)}`) : null,
    ),
    message.text ? h("div", { class: "text" }, message.text) : null,
    message.file ? fileElement(message.file) : null,
    h(
      "div",
      { class: "message-actions" },
      h("button", { class: "link comments", onclick: () => openPanel("thread", message.id) }, message.comments ? `${message.comments} comment${message.comments === 1 ? "" : "s"}` : "Comment"),
      mine ? h("button", { class: "link edit", onclick: () => openPanel("edit", message.id) }, "Edit") : null,
      deletable ? h("button", { class: "link delete", onclick: () => openPanel("delete", message.id) }, "Delete") : null,
      mine ? null : h("button", { class: "link", onclick: () => openPanel("report", message.author) }, "Report"),
    ),
  );
  ui.elements.set(message.id, { key, element });
  return element;
}

function pendingElement(item) {
  const key = `pending/${item.client_id}/${connection.state}`;
  const cached = ui.elements.get(item.client_id);
  if (cached?.key === key) return cached.element;
  const element = h(
    "li",
    { class: "message mine pending", dataset: { clientId: item.client_id } },
    h("div", { class: "meta" }, h("span", { class: "author" }, model.me), h("span", { class: "sending" }, connection.state === "online" ? "sending…" : "waiting for the connection…")),
    h("div", { class: "text" }, item.params.text),
  );
  ui.elements.set(item.client_id, { key, element });
  return element;
}

// -- files ----------------------------------------------------------------------------------

const fileUrls = new Map(); // file id -> {url, expires_at}

async function fileUrl(fileId) {
  const known = fileUrls.get(fileId);
  if (known && known.expires_at - Date.now() > 60_000) return known.url;
  const fresh = await connection.call("file.url", { file: fileId });
  fileUrls.set(fileId, fresh);
  return fresh.url;
}

function fileElement(file) {
  const download = h("button", { class: "link download", onclick: () => downloadFile(file).catch(reportError) }, "Download");
  const label = h("span", { class: "file-name" }, file.name);
  const row = h("div", { class: "file-row" }, h("span", { class: "file-icon", "aria-hidden": "true" }, "▤"), label, h("span", { class: "file-size" }, formatSize(file.size)), download);
  const box = h("div", { class: "file" }, row);
  if (file.content_type.startsWith("image/")) {
    const image = h("img", { class: "inline-image", alt: file.name });
    fileUrl(file.id).then((url) => (image.src = url), () => image.remove());
    box.prepend(image);
  }
  return box;
}

async function downloadFile(file) {
  const link = h("a", { href: await fileUrl(file.id), download: file.name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
}

async function onFileChosen() {
  const file = ui.fileInput.files[0];
  ui.fileInput.value = "";
  if (!file) return;
  const limit = connection.limits?.max_file_size;
  if (limit && file.size > limit) return showComposerError(`That file is too large: the limit is ${formatSize(limit)}.`);
  const target = sendTarget(); // where it goes, even if another chat is opened meanwhile
  const progress = h("progress", { max: file.size, value: 0, "aria-label": `Uploading ${file.name}` });
  const label = h("span", {}, `Uploading ${file.name}…`);
  fill(ui.progress, label, progress);
  ui.progress.hidden = false;
  try {
    const stored = await upload(connection, file, file.name, (sent) => (progress.value = sent));
    fill(label, `Sending ${file.name}…`);
    await queueSend(ui.input.value.trimEnd(), { file: stored.id }, true, target);
  } catch (error) {
    showComposerError(`The file was not sent. ${describeError(error)}`);
  } finally {
    ui.progress.hidden = true;
  }
}

// -- sending ----------------------------------------------------------------------------------

function onComposerKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendFromComposer();
  }
}

function autoGrow(input) {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
}

function showComposerError(text) {
  fill(ui.composerError, text);
}

function sendFromComposer() {
  const text = ui.input.value.trimEnd(); // leading spaces may be meant (code, a list)
  if (!text.trim()) return;
  queueSend(text, {}, true).catch(() => {}); // the error is shown by the composer
}

/** Queue a send to the open chat (or the draft's user); the composer is cleared when
 * it is queued, and the message shows as pending until it is posted. */
async function queueSend(text, extra = {}, clearComposer = false, target = sendTarget()) {
  const max = connection.limits?.text_max ?? 4096;
  if ([...text].length > max) {
    showComposerError(`That message is too long: at most ${max} characters.`);
    return null;
  }
  if (!target.user && !target.chat) return null;
  showComposerError("");
  if (clearComposer) {
    ui.input.value = "";
    autoGrow(ui.input);
  }
  const sending = connection.send({ ...target, text, ...extra });
  renderMessages(true);
  try {
    const result = await sending;
    if (result.message && target.user) await refreshChats();
    return result;
  } catch (error) {
    if (error instanceof RpcError && error.code === ErrorCode.BANNED) model.bannedUntil = error.data?.until ?? 0;
    showComposerError(`Not sent: ${describeError(error, "send")}`);
    if (clearComposer && !ui.input.value) ui.input.value = text;
    renderMessages();
    throw error;
  }
}

function sendTarget() {
  return view.draftUser ? { user: view.draftUser } : { chat: view.chat };
}

function renderNotices(now) {
  const notes = [];
  if (model.bannedUntil > now) notes.push(h("p", { class: "warning" }, `You are banned from sending until ${formatTime(model.bannedUntil, now)}.`));
  const limits = connection.limits;
  if (limits && view.chat === "general") {
    const left = Math.max(0, limits.rate_limit - model.generalSendsThisWindow(limits, now));
    if (left <= Math.min(LOW_ALLOWANCE, limits.rate_limit - 1)) {
      const period = limits.rate_period * 1000;
      const resets = (Math.floor(now / period) + 1) * period;
      notes.push(h("p", { class: "allowance" }, `${left} message${left === 1 ? "" : "s"} left in the general chat until ${formatTime(resets, now)}.`));
    }
  }
  fill(ui.notices, notes);
}

function tick() {
  if (!ui) return;
  if (model.expire()) renderChats();
  renderMessages();
}

// -- panels -------------------------------------------------------------------------------------

function onGlobalKey(event) {
  if (event.key === "Escape" && view.panel) {
    event.preventDefault();
    closePanel();
  } else if (ui && isSearchKey(event)) {
    event.preventDefault();
    openPanel("search");
  }
}

/** Ctrl+K (⌘K) anywhere, or "/" where it would type nothing. */
function isSearchKey(event) {
  if ((event.ctrlKey || event.metaKey) && !event.altKey && event.key.toLowerCase() === "k") return true;
  return event.key === "/" && !event.ctrlKey && !event.metaKey && !event.altKey && !event.target.closest?.("input, textarea, select");
}

function closePanel() {
  if (!ui || !view.panel) return;
  view.panel = null;
  ui.panel.hidden = true;
  root.dataset.panel = "";
  ui.input.focus();
}

function openPanel(kind, arg = null) {
  const build = PANELS[kind];
  const panel = { kind, arg, refresh: null };
  view.panel = panel;
  const { title, body, refresh } = build(app, arg);
  panel.refresh = refresh ?? null;
  fill(ui.panelTitle, title);
  fill(ui.panelBody, body);
  ui.panel.hidden = false;
  root.dataset.panel = kind;
  (ui.panelBody.querySelector("textarea, input, button") ?? ui.panel.querySelector(".close")).focus();
}

/** What the panels may use of the page (panels.js). */
const app = {
  connection,
  get model() {
    return model;
  },
  openChat,
  openDirect,
  showMessage,
  /** A change the page made itself (an edit's or a deletion's answer), as if pushed. */
  applied: onEvent,
  get openChatId() {
    return view.chat;
  },
  openPanel,
  closePanel,
  renderChats,
  reportError,
  sendTarget,
  takeComposerText() {
    const text = ui.input.value.trim();
    ui.input.value = "";
    return text;
  },
};

// -- the rest -------------------------------------------------------------------------------------

async function signOut() {
  try {
    await connection.signOut();
  } catch (error) {
    if (!(error instanceof ConnectionLost)) reportError(error);
  }
  saveSession(null);
  showSignIn("You are signed out.");
}

function toast(text, kind = "info") {
  if (!ui) return;
  const item = h("div", { class: `toast ${kind}`, onclick: () => item.remove() }, text);
  ui.toasts.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 5000);
}

function reportError(error) {
  console.error(error);
  toast(describeError(error), "error");
}

function joinFromFragment() {
  const match = location.hash.match(/^#join=([\w-]+)$/);
  if (!match || !ui) return;
  history.replaceState(null, "", location.pathname);
  openPanel("join", match[1]);
}

connection.on("login", () => setTimeout(joinFromFragment, 0));
window.addEventListener("hashchange", joinFromFragment);
boot();
