// The side panels: a thread, scheduled messages, a group's members and requests,
// and the small forms (a new direct chat, a new group, joining, reporting,
// scheduling, editing, deleting, searching). Each is `(app, arg) => {title, body,
// refresh?}`, where `app` is what a panel may use of the page: its connection, its
// model and a few actions. A new panel is one entry more in PANELS.

import { h, fill } from "./dom.js";
import { sameUser } from "./model.js";
import { ErrorCode, RpcError, randomId } from "./protocol.js";
import { chatLabel, describeError, formatTime, presenceText } from "./text.js";

export const USER_NAME = /^[A-Za-z0-9_.-]{1,32}$/;
const SEARCH_PAGE = 20;

/** A dot, lit while `presence` says online, that says so to a screen reader. */
export function presenceDot(presence) {
  const said = presenceText(presence);
  return h("span", { class: presence.online ? "presence online" : "presence", title: said, role: "img", "aria-label": said });
}

/** A message as a panel quotes it: author, time, text (or its file's name). */
function quoted(message, extra = null) {
  return [h("div", { class: "meta" }, h("span", { class: "author" }, message.author), h("time", {}, formatTime(message.ts)), extra), h("div", { class: "text" }, message.text || message.file?.name || "")];
}

/** A form in a panel: one or more fields, a submit button, an error line. `submit`
 * gets the field values; what it returns is shown as the outcome. */
export function panelForm({ fields, submitLabel, submit, action = "" }) {
  const inputs = fields.map((field) =>
    field.multiline
      ? h("textarea", { id: `f-${field.name}`, name: field.name, rows: 3, maxlength: field.max ?? null, required: field.required ?? false })
      : h("input", { id: `f-${field.name}`, name: field.name, type: field.type ?? "text", value: field.value ?? "", required: field.required ?? false, maxlength: field.max ?? null, autocapitalize: "none", spellcheck: "false" }),
  );
  const outcome = h("p", { class: "form-outcome", role: "alert" });
  const form = h(
    "form",
    { class: "panel-form" },
    fields.map((field, index) => [h("label", { for: `f-${field.name}` }, field.label), inputs[index]]),
    h("button", { type: "submit", class: "primary" }, submitLabel),
    outcome,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(inputs.map((input) => [input.name, input.value.trim()]));
    fill(outcome, "");
    outcome.className = "form-outcome";
    try {
      const said = await submit(values);
      if (said) fill(outcome, said);
    } catch (error) {
      outcome.className = "form-outcome error";
      fill(outcome, describeError(error, action));
    }
  });
  for (const input of inputs) {
    if (input.tagName === "TEXTAREA") {
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          form.requestSubmit();
        }
      });
    }
  }
  return { form, outcome, inputs };
}

export const PANELS = {
  thread(app, messageId) {
    const head = h("div", { class: "thread-message" });
    const list = h("ol", { class: "comments", "aria-label": "Comments" });
    const { form, inputs } = panelForm({
      fields: [{ name: "comment", label: "Comment", multiline: true, required: true, max: 4096 }],
      submitLabel: "Comment",
      submit: async ({ comment }) => {
        if (!comment) return "";
        await app.connection.call("comment", { message: messageId, text: comment });
        inputs[0].value = "";
        return "";
      },
    });
    const draw = () => {
      const message = app.model.findMessage(messageId);
      fill(head, message ? quoted(message) : "This message is gone (expired or deleted).");
      const comments = app.model.commentsOf(messageId);
      fill(list, comments.length ? comments.map((c) => h("li", { class: "comment" }, h("div", { class: "meta" }, h("span", { class: "author" }, c.author), h("time", {}, formatTime(c.ts))), h("div", { class: "text" }, c.text))) : h("li", { class: "empty" }, "No comments yet."));
    };
    app.connection.call("comments", { message: messageId, limit: 100 }).then(
      (page) => {
        app.model.setComments(messageId, page.comments);
        draw();
      },
      app.reportError,
    );
    draw();
    return { title: "Thread", body: [head, list, form], refresh: (change) => (change.thread === messageId || change.thread === undefined) && draw() };
  },

  scheduled(app) {
    const list = h("ul", { class: "scheduled-list" });
    const draw = () => {
      const items = [...app.model.scheduled.values()].sort((a, b) => a.send_at - b.send_at);
      fill(
        list,
        items.length
          ? items.map((item) =>
              h(
                "li",
                { dataset: { id: item.id } },
                h("div", { class: "meta" }, h("span", { class: "author" }, chatLabel(app.model.chats.get(item.chat)) || item.chat), h("time", {}, formatTime(item.send_at))),
                h("div", { class: "text" }, item.text || item.file?.name || ""),
                h("button", { onclick: () => app.connection.call("cancel", { id: item.id }).catch(app.reportError) }, "Cancel"),
              ),
            )
          : h("li", { class: "empty" }, "Nothing scheduled."),
      );
    };
    draw();
    return { title: "Scheduled messages", body: list, refresh: (change) => change.scheduled !== false && draw() };
  },

  schedule(app) {
    const inAnHour = new Date(Date.now() + 3600_000);
    inAnHour.setSeconds(0, 0);
    const local = new Date(inAnHour.getTime() - inAnHour.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
    const { form, inputs } = panelForm({
      fields: [
        { name: "text", label: "Message", multiline: true, required: true, max: 4096 },
        { name: "when", label: "Send at", type: "datetime-local", value: local, required: true },
      ],
      submitLabel: "Schedule",
      submit: async ({ text, when }) => {
        const sendAt = new Date(when).getTime();
        if (!text) return "Write the message first.";
        if (!(sendAt > Date.now())) return "Choose a time in the future.";
        const result = await app.connection.send({ ...app.sendTarget(), text, send_at: sendAt });
        inputs[0].value = "";
        return result.scheduled ? `Scheduled for ${formatTime(result.scheduled.send_at)}.` : "Sent.";
      },
    });
    inputs[0].value = app.takeComposerText();
    const target = app.sendTarget();
    return { title: `Schedule in ${target.user ? `@${target.user}` : chatLabel(app.model.chats.get(target.chat))}`, body: [form, h("button", { class: "link", onclick: () => app.openPanel("scheduled") }, "See scheduled messages")] };
  },

  direct(app) {
    const { form } = panelForm({
      fields: [{ name: "user", label: "User name", required: true, max: 33 }],
      submitLabel: "Open chat",
      submit: async ({ user }) => {
        const name = user.replace(/^@/, "");
        if (!USER_NAME.test(name)) return "A user name is 1 to 32 letters, digits, _ . or -.";
        if (sameUser(name, app.model.me)) return "That is you.";
        await app.openDirect(name);
        app.closePanel();
        return "";
      },
    });
    return { title: "New direct chat", body: form };
  },

  group(app) {
    const { form } = panelForm({
      fields: [{ name: "title", label: "Group title", required: true, max: 100 }],
      submitLabel: "Create group",
      submit: async ({ title }) => {
        const { chat } = await app.connection.call("chat.create", { title });
        app.model.apply("chat.joined", { chat });
        await app.openChat(chat.id);
        app.openPanel("members", chat.id);
        return "";
      },
    });
    return { title: "New group", body: form };
  },

  join(app, link = "") {
    const { form } = panelForm({
      fields: [{ name: "link", label: "Join link", required: true, value: link ?? "" }],
      submitLabel: "Ask to join",
      action: "join",
      submit: async ({ link: given }) => {
        const code = given.includes("#join=") ? given.split("#join=")[1] : given;
        const result = await app.connection.call("chat.join", { link: code });
        const title = result.chat?.title ?? "the group";
        return result.status === "member" ? `You are already a member of ${title}.` : `Asked to join ${title}. The owner will decide.`;
      },
    });
    return { title: "Join a group", body: form };
  },

  report(app, user) {
    const { form } = panelForm({
      fields: [{ name: "reason", label: `Why report ${user}? (optional)`, multiline: true, max: 1000 }],
      submitLabel: `Report ${user}`,
      submit: async ({ reason }) => {
        await app.connection.call("report", reason ? { user, reason } : { user });
        return `${user} was reported. Thank you.`;
      },
    });
    return { title: `Report ${user}`, body: form };
  },

  members(app, chatId) {
    const chat = app.model.chats.get(chatId);
    const owner = sameUser(chat?.owner, app.model.me);
    const members = h("ul", { class: "members", "aria-label": "Members" });
    const requests = h("ul", { class: "requests-list", "aria-label": "Join requests" });
    const linkOut = h("div", { class: "link-out" });
    const drawMembers = async () => {
      const result = await app.connection.call("chat.members", { chat: chatId });
      names = result;
      drawNames();
      // Someone who joined since this page asked (the owner is not told of each join).
      const unknown = result.members.filter((name) => !sameUser(name, app.model.me) && !app.model.presenceOf(name)).slice(0, 100);
      if (unknown.length) {
        app.model.setPresence((await app.connection.call("presence", { users: unknown })).users);
        drawNames();
      }
    };
    let names = null;
    const drawNames = () => {
      if (!names) return;
      fill(
        members,
        names.members.map((name) => {
          const presence = app.model.presenceOf(name);
          return h("li", {}, presence ? presenceDot(presence) : null, name, sameUser(name, names.owner) ? h("span", { class: "tag" }, "owner") : null);
        }),
      );
    };
    const drawRequests = () => {
      const pending = [...(app.model.requests.get(chatId)?.values() ?? [])];
      fill(
        requests,
        pending.length
          ? pending.map((request) =>
              h(
                "li",
                {},
                h("span", { class: "author" }, request.user),
                h("button", { class: "primary", onclick: () => decide("chat.approve", request.user) }, "Approve"),
                h("button", { onclick: () => decide("chat.decline", request.user) }, "Decline"),
              ),
            )
          : h("li", { class: "empty" }, "No one is asking to join."),
      );
    };
    const decide = async (method, user) => {
      try {
        await app.connection.call(method, { chat: chatId, user });
      } catch (error) {
        if (!(error instanceof RpcError && error.code === ErrorCode.CONFLICT)) app.reportError(error);
      }
      app.model.requests.get(chatId)?.delete(user.toLowerCase());
      drawRequests();
      app.renderChats();
      drawMembers().catch(app.reportError);
    };
    const body = [h("h3", {}, "Members"), members];
    if (owner) {
      const invite = panelForm({
        fields: [{ name: "invitee", label: "Invite a user", required: true, max: 33 }],
        submitLabel: "Invite",
        submit: async ({ invitee }) => {
          const name = invitee.replace(/^@/, "");
          await app.connection.call("chat.invite", { chat: chatId, user: name });
          invite.inputs[0].value = "";
          await drawMembers();
          return `${name} is now a member.`;
        },
      });
      const makeLink = async () => {
        const { link } = await app.connection.call("chat.link", { chat: chatId });
        const url = `${location.origin}/#join=${link}`;
        fill(linkOut, h("p", {}, "Anyone with this link can ask to join (a new link replaces it):"), h("input", { class: "link-text", readonly: true, value: url, "aria-label": "Join link", onfocus: (event) => event.target.select() }));
        linkOut.querySelector("input").focus();
      };
      body.push(invite.form, h("h3", {}, "Join link"), h("button", { onclick: () => makeLink().catch(app.reportError) }, "Make a join link"), linkOut, h("h3", {}, "Requests to join"), requests);
      app.connection.call("chat.requests", { chat: chatId }).then((result) => {
        app.model.setRequests(chatId, result.requests);
        drawRequests();
        app.renderChats();
      }, app.reportError);
      drawRequests();
    } else {
      body.push(h("button", { class: "danger", onclick: () => app.connection.call("chat.leave", { chat: chatId }).then(app.closePanel, app.reportError) }, "Leave group"));
    }
    drawMembers().catch(app.reportError);
    return {
      title: chat ? chatLabel(chat) : "Group",
      body,
      refresh: (change) => {
        if (change.requests === chatId) drawRequests();
        if (change.presence) drawNames();
      },
    };
  },

  edit(app, messageId) {
    const message = app.model.findMessage(messageId);
    if (!message) return { title: "Edit", body: h("p", {}, "This message is gone (expired or deleted).") };
    const clientId = randomId(); // a repeat of this edit (after a lost answer) is the same edit
    const { form, inputs } = panelForm({
      fields: [{ name: "text", label: "Message", multiline: true, required: !message.file, max: 4096 }],
      submitLabel: "Save",
      submit: async ({ text }) => {
        if (text === message.text) return app.closePanel();
        const result = await app.connection.call("edit", { message: messageId, text, client_id: clientId });
        app.applied("message.edited", result);
        app.closePanel();
        return "";
      },
    });
    inputs[0].value = message.text;
    return { title: "Edit message", body: [form, h("p", { class: "hint" }, "Everyone in the chat sees it marked as edited.")] };
  },

  delete(app, messageId) {
    const message = app.model.findMessage(messageId);
    if (!message) return { title: "Delete", body: h("p", {}, "This message is gone (expired or deleted).") };
    const outcome = h("p", { class: "form-outcome error", role: "alert" });
    const remove = async () => {
      try {
        await app.connection.call("delete", { message: messageId });
        app.applied("message.deleted", { chat: message.chat, seq: message.seq, id: message.id });
        app.closePanel();
      } catch (error) {
        fill(outcome, describeError(error));
      }
    };
    return {
      title: "Delete message",
      body: [
        h("div", { class: "thread-message" }, quoted(message)),
        h("p", {}, "Delete this message and its comments for everyone? This cannot be undone."),
        h("div", { class: "row" }, h("button", { onclick: app.closePanel }, "Cancel"), h("button", { class: "danger", onclick: remove }, "Delete")),
        outcome,
      ],
    };
  },

  search(app) {
    const here = app.model.chats.get(app.openChatId);
    const scope = h(
      "select",
      { id: "f-scope", name: "scope" },
      h("option", { value: "" }, "All chats"),
      here ? h("option", { value: here.id }, `Only ${chatLabel(here)}`) : null,
    );
    const results = h("ol", { class: "search-results", "aria-label": "Search results" });
    const status = h("p", { class: "form-outcome", role: "status" });
    const more = h("button", { class: "more", hidden: true }, "More results");
    let asked = null; // {query, chat}: what the shown results answer
    let last = null; // the last result's id: the next page is before it
    let count = 0;
    const show = (messages, hasMore) => {
      for (const message of messages) {
        const chat = app.model.chats.get(message.chat);
        results.append(
          h(
            "li",
            { dataset: { id: message.id } },
            h("button", { class: "result", onclick: () => app.showMessage(message.chat, message.id, message.seq).catch(app.reportError) }, quoted(message, h("span", { class: "result-chat" }, chatLabel(chat) || message.chat))),
          ),
        );
      }
      count += messages.length;
      last = messages.at(-1)?.id ?? last;
      more.hidden = !hasMore;
      fill(status, count ? `${count}${hasMore ? "+" : ""} message${count === 1 && !hasMore ? "" : "s"} found.` : "No messages found.");
    };
    const page = async () => {
      const params = { query: asked.query, limit: SEARCH_PAGE };
      if (asked.chat) params.chat = asked.chat;
      if (last) params.before = last;
      const answer = await app.connection.call("search", params);
      show(answer.messages, answer.has_more);
    };
    const { form, inputs } = panelForm({
      fields: [{ name: "query", label: "Words to find", required: true, max: 256, type: "search" }],
      submitLabel: "Search",
      submit: async ({ query }) => {
        asked = { query, chat: scope.value };
        last = null;
        count = 0;
        results.replaceChildren();
        more.hidden = true;
        await page();
        return "";
      },
    });
    const submitButton = form.querySelector("button");
    form.insertBefore(h("label", { for: "f-scope" }, "Where"), submitButton);
    form.insertBefore(scope, submitButton);
    more.addEventListener("click", async () => {
      const next = results.children.length;
      try {
        await page();
        results.children[next]?.querySelector("button")?.focus(); // the keyboard goes on from there
      } catch (error) {
        fill(status, describeError(error));
      }
    });
    return {
      title: "Search",
      body: [form, status, results, more],
      refresh: (change) => {
        if (change.deleted) results.querySelector(`[data-id="${CSS.escape(change.deleted)}"]`)?.remove();
      },
    };
  },
};
