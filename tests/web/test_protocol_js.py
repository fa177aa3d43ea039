"""protocol.js, the web client's wire module (no DOM), run in a real Chromium
against a real server: calls and errors, events each cursor once, reconnect with
`since`, and queued sends posted once through `client_id`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from tests.web.support import PASSWORD, WebServer
from tests.wsclient import user_device

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER_SETTINGS = {"presence_grace": 0.1}  # a closed device goes offline at once

# A Connection on the page as `window.c`, its events in `window.seen`.
SIGN_IN = """async ([user, password, register]) => {
  const protocol = await import("/assets/protocol.js");
  window.protocol = protocol;
  const c = new protocol.Connection(
    `ws://${location.host}/`, {backoff: [100], storage: localStorage});
  window.c = c;
  window.seen = [];
  window.logins = [];
  c.on("event", (method, params) => window.seen.push([method, params.cursor, params]));
  c.on("login", (result) => window.logins.push(result));
  await c.signIn({user, password, register});
  return c.session;
}"""


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser, server: WebServer) -> AsyncIterator[Page]:
    context = await browser.new_context(base_url=server.origin)
    context.set_default_timeout(10_000)
    page = await context.new_page()
    await page.goto("/healthz")  # a blank page of the server's origin
    yield page
    await context.close()


async def sign_in(page: Page, user: str, register: bool = True) -> dict[str, Any]:
    session: dict[str, Any] = await page.evaluate(SIGN_IN, [user, PASSWORD, register])
    return session


async def general_texts(url: str, user: str) -> list[str]:
    async with user_device(url, user, register=False) as peer:
        history = await peer.call("history", chat="general", limit=100)
    return [message["text"] for message in history["messages"]]


async def test_call_results_and_errors(page: Page, server: WebServer) -> None:
    """call() resolves with the result and rejects with an RpcError carrying code and data."""
    await sign_in(page, "pj_calls")
    status = await page.evaluate("() => c.call('status')")
    assert status["user"] == "pj_calls"
    error = await page.evaluate(
        """() => c.call('upload.begin', {name: 'big', size: 10 ** 12}).then(
             () => null, (e) => ({name: e.name, code: e.code, data: e.data}))"""
    )
    assert error == {"name": "RpcError", "code": -32006, "data": {"max": 5 * 2**20}}


async def test_sign_in_refused_with_the_servers_error(page: Page) -> None:
    """A wrong password rejects signIn with -32001 and leaves the connection signed out."""
    await sign_in(page, "pj_wrong")
    outcome = await page.evaluate(
        """async () => {
          const d = new protocol.Connection(`ws://${location.host}/`);
          const error = await d.signIn({user: "pj_wrong", password: "not the password"})
            .catch((e) => e);
          return {code: error.code, session: d.session, state: d.state};
        }"""
    )
    assert outcome == {"code": -32001, "session": None, "state": "offline"}


async def test_events_arrive_once_in_cursor_order(page: Page, server: WebServer) -> None:
    """Pushed events reach the listener in cursor order; a repeated cursor is dropped."""
    await sign_in(page, "pj_events")
    async with user_device(server.url, "pj_other") as other:
        for text in ("one", "two"):
            await other.call("send", user="pj_events", text=text)
    await page.wait_for_function("() => seen.filter(([m]) => m === 'message').length === 2")
    before, after = await page.evaluate(
        """() => {
          const [method, cursor, params] = seen.filter(([m]) => m === "message").at(-1);
          const before = seen.length;
          c.receive(JSON.stringify({jsonrpc: "2.0", method, params}));  // the same push again
          return [before, seen.length];
        }"""
    )
    assert after == before
    # presence carries the last cursor told, not one of its own (wire.UNLOGGED_EVENTS)
    seen = await page.evaluate("() => seen")
    cursors = [cursor for method, cursor, _ in seen if method != "presence"]
    assert cursors == sorted(set(cursors))


async def test_presence_is_never_taken_for_a_repeat(page: Page, server: WebServer) -> None:
    """`presence` carries the last cursor already told, not one of its own: each one
    reaches the listener although its cursor was seen (wire.UNLOGGED_EVENTS)."""
    await sign_in(page, "pj_watcher")
    async with user_device(server.url, "pj_friend") as friend:
        await friend.call("send", user="pj_watcher", text="a direct chat: we share one")
        await page.wait_for_function("() => seen.some(([m]) => m === 'message')")
    await presence_said(page, online=False)
    async with user_device(server.url, "pj_friend", register=False):
        await presence_said(page, online=True)
    await presence_said(page, online=False)
    events = await page.evaluate("() => seen.map(([method, cursor]) => [method, cursor])")
    told = 0
    repeats = 0
    for method, cursor in events:
        if method == "presence":
            repeats += cursor <= told
        told = max(told, cursor)
    assert [method for method, _ in events].count("presence") == 3
    assert repeats >= 1  # dropped as repeats by a client that skips seen cursors


async def presence_said(page: Page, online: bool) -> None:
    await page.wait_for_function(
        "(online) => seen.filter(([m]) => m === 'presence').at(-1)?.[2].online === online",
        arg=online,
    )


async def test_reconnect_resumes_with_since(page: Page, server: WebServer) -> None:
    """After a dropped socket the module logs in with `since` and gets what it missed."""
    await sign_in(page, "pj_resume")
    async with user_device(server.url, "pj_resume", register=False) as twin:
        await page.evaluate("() => { window.before = c.cursor; c.socket.close(); }")
        await twin.call("send", chat="general", text="while away")
        await page.wait_for_function("() => logins.length === 2")
    login = await page.evaluate("() => logins[1]")
    assert login["resumed"] is True
    texts = await page.evaluate(
        "() => seen.filter(([m]) => m === 'message').map(([, , p]) => p.message.text)"
    )
    assert texts == ["while away"]


async def test_a_silent_connection_is_noticed_and_resumed(page: Page, server: WebServer) -> None:
    """A browser never sees the server's pings: when its connection goes silent (the
    path died, the socket still looks open), the heartbeat notices within idle +
    timeout, reconnects, and resumes with `since`, missing nothing."""
    await page.evaluate(
        """async ([user, password]) => {
          const protocol = await import("/assets/protocol.js");
          // A socket whose path can die without a close: while `window.deaf`, nothing
          // goes out and nothing comes in.
          window.deaf = false;
          class Flaky extends WebSocket {
            constructor(url) {
              super(url);
              this.addEventListener("message", (m) => {
                if (window.deaf) m.stopImmediatePropagation();
              });
            }
            set onmessage(f) { this.addEventListener("message", f); }
            send(data) { if (!window.deaf) super.send(data); }
          }
          const c = new protocol.Connection(`ws://${location.host}/`, {
            backoff: [50], WebSocket: Flaky, heartbeat: {idle: 200, timeout: 300}});
          window.hb = c;
          window.hbStates = [];
          window.hbSeen = [];
          c.on("state", (s) => window.hbStates.push(s));
          c.on("event", (method, params) => window.hbSeen.push([method, params]));
          await c.signIn({user, password, register: true});
        }""",
        ["pj_silent", PASSWORD],
    )
    await page.evaluate("() => { window.deaf = true; window.hbStates = []; }")
    async with user_device(server.url, "pj_silent", register=False) as twin:
        await twin.call("send", chat="general", text="said while it was deaf")
        await page.wait_for_function("() => hbStates.includes('offline')")
        # Still deaf: the heartbeat took the silence for a dead connection on its own.
        await page.evaluate("() => { window.deaf = false; }")
        await page.wait_for_function("() => hb.state === 'online'")
    texts = await page.evaluate(
        "() => hbSeen.filter(([m]) => m === 'message').map(([, p]) => p.message.text)"
    )
    assert texts == ["said while it was deaf"]
    await page.evaluate("() => hb.stop()")


async def test_a_slow_probe_reply_on_a_connection_that_is_talking_keeps_it(
    page: Page, server: WebServer
) -> None:
    """The heartbeat's probe answered late (behind a slow call on that connection)
    while events keep arriving: the connection is alive, and is kept. On main it was
    closed and reconnected because that one reply was late, though frames came in
    all along."""
    await page.evaluate(
        """async ([user, password]) => {
          const protocol = await import("/assets/protocol.js");
          // The reply to each `unread` comes 1 s late; everything else at once.
          window.probes = 0;
          window.answered = 0;
          class Slow extends WebSocket {
            constructor(url) {
              super(url);
              this.addEventListener("message", (m) => {
                const id = JSON.parse(m.data).id;
                if (id === undefined || !this.late?.has(id)) return;
                m.stopImmediatePropagation();
                this.late.delete(id);
                setTimeout(() => { window.answered += 1; this.deliver(m.data); }, 1000);
              });
            }
            set onmessage(f) {
              this.deliver = f && ((data) => f({data}));
              this.addEventListener("message", f);
            }
            send(data) {
              const request = JSON.parse(data);
              if (request.method === "unread") {
                window.probes += 1;
                (this.late ??= new Set()).add(request.id);
              }
              super.send(data);
            }
          }
          const c = new protocol.Connection(`ws://${location.host}/`, {
            backoff: [50], WebSocket: Slow, heartbeat: {idle: 200, timeout: 300}});
          window.hb = c;
          window.hbStates = [];
          c.on("state", (s) => window.hbStates.push(s));
          await c.signIn({user, password, register: true});
          window.hbStates = [];
        }""",
        ["pj_talking", PASSWORD],
    )
    async with user_device(server.url, "pj_talking", register=False) as twin:
        await page.wait_for_function("() => probes >= 1")
        while await page.evaluate("() => answered") < 1:  # events all along the wait
            await twin.call("send", chat="general", text="still here")
            await asyncio.sleep(0.05)
    assert await page.evaluate("() => hbStates") == []  # main: ['offline', ...]
    await page.evaluate("() => hb.stop()")


async def test_send_lost_in_flight_is_posted_once(page: Page, server: WebServer) -> None:
    """A send whose reply is lost with the socket is sent again after the reconnect,
    with the same client_id: one message is posted, and the promise gets it."""
    await sign_in(page, "pj_once")
    result = await page.evaluate(
        """async () => {
          const sending = c.send({chat: "general", text: "exactly once"});
          c.socket.close();  // the request is out; its reply will not come on this socket
          const first = c.outbox.length;
          const result = await sending;
          return {first, after: c.outbox.length, text: result.message.text};
        }"""
    )
    assert result == {"first": 1, "after": 0, "text": "exactly once"}
    assert (await general_texts(server.url, "pj_once")).count("exactly once") == 1


async def test_sends_queued_offline_survive_a_reload(page: Page, server: WebServer) -> None:
    """Sends queued while offline are kept in storage; a reloaded page signed in as the
    same device posts them, once each, in order."""
    session = await sign_in(page, "pj_reload")
    await page.evaluate(
        """() => {
          c.stop();  // offline, with no reconnect
          c.send({chat: "general", text: "queued 1"});
          c.send({chat: "general", text: "queued 2"});
        }"""
    )
    stored = await page.evaluate(
        "() => Object.keys(localStorage).filter(k => k.includes('outbox'))"
    )
    assert len(stored) == 1
    await page.reload()
    await page.evaluate(
        """async (session) => {
          const protocol = await import("/assets/protocol.js");
          const c = new protocol.Connection(`ws://${location.host}/`, {storage: localStorage});
          await c.signIn({user: session.user, token: session.token});
          while (c.outbox.length) await new Promise((wake) => setTimeout(wake, 20));
        }""",
        session,
    )
    texts = await general_texts(server.url, "pj_reload")
    assert [text for text in texts if text.startswith("queued")] == ["queued 1", "queued 2"]


async def test_revoked_token_ends_the_session(page: Page, server: WebServer) -> None:
    """When the device is logged out elsewhere, the reconnect's login fails and the
    module says signed-out instead of retrying for ever."""
    await sign_in(page, "pj_revoked")
    await page.evaluate("() => { window.states = []; c.on('state', (s) => states.push(s)); }")
    token = await page.evaluate("() => c.session.token")
    async with user_device(server.url, "pj_revoked", register=False) as twin:
        await twin.call("login", user="pj_revoked", token=token)
        await twin.call("logout")
    await page.wait_for_function("() => states.includes('signed-out')")
    assert await page.evaluate("() => c.session") is None


MODEL = """async () => {
  const { Model } = await import("/assets/model.js");
  const model = new Model("me");
  const chat = {id: "c", kind: "group", title: "g", owner: "me",
                unread: 0, read_seq: 0, last_seq: 0};
  model.setChats([chat, {...chat, id: "general", kind: "general", title: "general", owner: null}]);
  const message = (seq, author, expires_at = null) =>
    ({id: `m${seq}`, chat: "c", seq, author, text: `t${seq}`, ts: 1000 + seq, expires_at,
      file: null, comments: 0});
  const counts = [];
  const unread = () => counts.push(model.chats.get("c").unread);
  model.apply("message", {message: message(1, "bob"), cursor: 1}); unread();
  model.apply("message", {message: message(1, "bob"), cursor: 1}); unread();  // a repeat
  model.apply("message", {message: message(2, "bob", 5000), cursor: 2}); unread();
  model.apply("read", {chat: "c", read_seq: 1, cursor: 3}); unread();
  model.apply("read", {chat: "c", read_seq: 0, cursor: 4}); unread();  // never backwards
  model.expire(5000); unread();
  model.apply("message", {message: message(3, "bob"), cursor: 5}); unread();
  model.apply("message", {message: message(4, "ME"), cursor: 6}); unread();  // posting reads
  model.apply("comment", {comment: {id: "k", message: "m3", chat: "c", author: "bob", text: "x",
                                    ts: 1}, cursor: 7});
  model.apply("comment", {comment: {id: "k", message: "m3", chat: "c", author: "bob", text: "x",
                                    ts: 1}, cursor: 7});
  return {counts, seqs: model.messagesOf("c").map((m) => m.seq),
          comments: model.findMessage("m3").comments, first: model.sortedChats()[0].id,
          unknown: model.apply(
            "message", {message: {...message(1, "x"), chat: "new"}}).unknownChat};
}"""


async def test_model_keeps_unread_counts_from_events(page: Page) -> None:
    """model.js: repeats change nothing, read markers only move forward, expired and
    own messages are not unread, comments count once, the busiest chat comes first."""
    result = await page.evaluate(MODEL)
    assert result == {
        "counts": [1, 1, 2, 1, 1, 0, 1, 0],
        "seqs": [1, 3, 4],
        "comments": 1,
        "first": "c",
        "unknown": "new",
    }


MODEL_MESSAGING = """async () => {
  const { Model } = await import("/assets/model.js");
  const model = new Model("me");
  model.setChats([{id: "c", kind: "group", title: "g", owner: "me", unread: 0, mentions: 0,
                   read_seq: 0, last_seq: 0}]);
  const message = (seq, text, mentions = []) =>
    ({id: `m${seq}`, chat: "c", seq, author: "bob", text, ts: 1000 + seq, expires_at: null,
      file: null, comments: 0, edited_at: null, mentions});
  const counts = [];
  const count = () => counts.push([model.chats.get("c").unread, model.chats.get("c").mentions]);
  model.apply("message", {message: message(1, "hi @Me", ["ME"])}); count();
  model.apply("message", {message: message(2, "plain")}); count();
  model.apply("message.edited", {message: {...message(2, "@me", ["me"]), edited_at: 5}}); count();
  model.apply("message.deleted", {chat: "c", seq: 1, id: "m1"}); count();
  model.apply("message.deleted", {chat: "c", seq: 1, id: "m1"}); count();  // a repeat
  const unseen = model.apply("message.deleted", {chat: "c", seq: 9, id: "m9"}).recount;
  model.apply("message", {message: message(3, "@me again", ["me"])}); count();
  model.apply("read", {chat: "c", read_seq: 2}); count();
  model.apply("read", {chat: "c", read_seq: 3}); count();
  return {counts, unseen, edited: model.findMessage("m2").edited_at,
          seqs: model.messagesOf("c").map((m) => m.seq)};
}"""


async def test_model_counts_mentions_edits_and_deletions(page: Page) -> None:
    """model.js: a mention counts while unread and follows the read marker; an edit
    replaces the message in place and may add a mention; a deletion takes out what it
    counted (once), and one never seen asks the server for the counts."""
    result = await page.evaluate(MODEL_MESSAGING)
    assert result == {
        "counts": [[1, 1], [2, 1], [2, 2], [1, 1], [1, 1], [2, 2], [1, 1], [0, 0]],
        "unseen": "c",
        "edited": 5,
        "seqs": [2, 3],
    }
