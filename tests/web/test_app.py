"""The web client end to end in a real Chromium against a real server: people in
separate browser profiles (devices), and the console side through tests/wsclient."""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    FilePayload,
    Page,
    expect,
)

from tests.server.extras_support import error_of
from tests.web.support import PASSWORD, WebServer, new_page
from tests.wsclient import connected, user_device

pytestmark = pytest.mark.asyncio(loop_scope="module")


SERVER_SETTINGS = {
    "message_ttl": 540,  # under ten minutes: every message shows its time left
    "rate_limit": 6,
    "report_threshold": 1,
    "login_attempts": 2,
    "max_file_size": 200_000,
    "upload_chunk_size": 16_384,
    "presence_grace": 0.1,  # a closed page goes offline at once
}


class People:
    """Browser profiles opened by a test, closed at its end; what went wrong in their
    pages (an uncaught error, a blocked script or style) fails the test."""

    def __init__(self, browser: Browser, server: WebServer) -> None:
        self.browser = browser
        self.server = server
        self.contexts: list[BrowserContext] = []
        self.failures: list[str] = []

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda error: self.failures.append(f"uncaught: {error}"))
        page.on("console", self.console)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and ("Content Security Policy" in message.text):
            self.failures.append(message.text)

    async def page(
        self, user: str | None = None, register: bool = False, **options: object
    ) -> Page:
        context, page = await new_page(self.browser, self.server.origin, self.watch, **options)
        self.contexts.append(context)
        if user is not None:
            await sign_in(page, user, register)
        return page

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


@pytest_asyncio.fixture(loop_scope="module")
async def people(browser: Browser, server: WebServer) -> AsyncIterator[People]:
    opened = People(browser, server)
    yield opened
    await opened.close()
    assert opened.failures == []


async def sign_in(page: Page, user: str, register: bool = False, password: str = PASSWORD) -> None:
    await page.fill("#signin-user", user)
    await page.fill("#signin-password", password)
    await page.click("text=Create account" if register else "button:has-text('Sign in')")
    await expect(page.locator(".topbar .me")).to_contain_text(user)


def chat_item(page: Page, name: str):  # type: ignore[no-untyped-def]
    return page.locator(".chat-item", has=page.locator(".chat-name", has_text=name))


async def open_chat(page: Page, name: str) -> None:
    await chat_item(page, name).click()
    await expect(page.locator("#chat-title")).to_contain_text(name)


async def send(page: Page, text: str) -> None:
    await page.fill("#composer", text)
    await page.press("#composer", "Enter")


async def start_direct(page: Page, user: str) -> None:
    """Open a direct chat with ``user``: sent to once its title shows (before, the
    composer still writes to the chat open until then)."""
    await page.click("text=New direct chat")
    await page.fill("#f-user", user)
    await page.press("#f-user", "Enter")
    await expect(page.locator("#chat-title")).to_have_text(f"@{user}")


def shown(page: Page, text: str):  # type: ignore[no-untyped-def]
    """The posted (not pending) messages of the open chat with exactly this text."""
    return page.locator(".messages .message:not(.pending) .text", has_text=text)


async def test_general_direct_chat_and_a_second_device(people: People, server: WebServer) -> None:
    """Messages arrive live in the general chat and a direct chat; unread counts show
    and clear on opening, on the user's other device too; a reload stays signed in."""
    alice = await people.page("alice", register=True)
    bob = await people.page("bob", register=True)
    alice2 = await people.page("alice")
    await expect(alice.locator("#chat-title")).to_have_text("general")
    await send(alice, "hello everyone")
    for page in (alice, bob, alice2):
        await expect(shown(page, "hello everyone")).to_have_count(1)
    await expect(bob.locator(".message .author", has_text="alice")).to_have_count(1)
    await expect(bob.locator(".message .expiry")).to_have_text("expires in 9 min")
    tab = await alice.context.new_page()  # a second tab: the same device, signed in
    await tab.goto("/")
    await expect(shown(tab, "hello everyone")).to_have_count(1)

    await start_direct(bob, "alice")
    await send(bob, "psst, alice")
    await expect(shown(bob, "psst, alice")).to_have_count(1)
    for page in (alice, alice2):
        await expect(chat_item(page, "bob").locator(".badge")).to_have_text("1")
    await open_chat(alice, "bob")
    await expect(shown(alice, "psst, alice")).to_have_count(1)
    await expect(alice.locator(".new-line")).to_have_count(1)
    await expect(chat_item(alice2, "bob").locator(".badge")).to_have_count(0)

    await send(alice, "hi bob\nsecond line")
    await expect(shown(bob, "second line")).to_have_count(1)
    await expect(chat_item(alice2, "bob").locator(".badge")).to_have_count(0)

    await bob.reload()
    await expect(bob.locator(".topbar .me")).to_contain_text("bob")
    await open_chat(bob, "alice")
    await expect(shown(bob, "hi bob")).to_have_count(1)
    async with user_device(server.url, "alice", register=False) as console:
        await console.call("send", user="bob", text="from the console")
    await expect(shown(bob, "from the console")).to_have_count(1)
    await expect(shown(alice, "from the console")).to_have_count(1)
    await expect(chat_item(tab, "bob")).to_have_count(1)

    token = await alice2.evaluate("() => JSON.parse(localStorage['messenger.session']).token")
    await alice2.click("text=Sign out")
    await expect(alice2.locator("#signin-error")).to_have_text("You are signed out.")
    async with connected(server.url) as console:
        refused = await error_of(console, "login", user="alice", token=token)
    assert refused.code == -32001
    assert await alice2.evaluate("() => localStorage['messenger.session']") is None


async def test_group_by_link_with_approval_and_a_thread(people: People) -> None:
    """The owner makes a group and a link; a request by link waits for the owner's
    approval; comments on a message show in a thread on both sides."""
    owner = await people.page("gina", register=True)
    joiner = await people.page("hank", register=True)
    await owner.click("text=New group")
    await owner.fill("#f-title", "Book club")
    await owner.press("#f-title", "Enter")
    await expect(owner.locator("#chat-title")).to_have_text("Book club")
    await owner.click("text=Make a join link")
    link = await owner.locator(".link-text").input_value()
    assert "/#join=" in link

    await joiner.goto(link)
    await expect(joiner.locator("#f-link")).to_have_value(link.split("#join=")[1])
    await joiner.press("#f-link", "Enter")
    await expect(joiner.locator(".form-outcome")).to_contain_text("Asked to join Book club")
    await expect(chat_item(owner, "Book club").locator(".requests")).to_have_text("1 ask")
    request = owner.locator(".requests-list li", has_text="hank")
    await request.locator("text=Approve").click()
    await expect(owner.locator(".members li", has_text="hank")).to_have_count(1)
    await expect(
        owner.locator(".members li", has_text="hank").locator(".presence")
    ).to_have_attribute("aria-label", "online")
    await expect(chat_item(joiner, "Book club")).to_have_count(1)
    stranger = await people.page("ian", register=True)
    await stranger.goto(link)
    await stranger.press("#f-link", "Enter")
    await owner.locator(".requests-list li", has_text="ian").locator("text=Decline").click()
    await expect(stranger.locator(".toast")).to_have_text(
        "Your request to join Book club was declined"
    )
    await expect(owner.locator(".requests-list .empty")).to_have_count(1)
    await expect(chat_item(stranger, "Book club")).to_have_count(0)
    await owner.keyboard.press("Escape")
    await expect(owner.locator(".panel")).to_be_hidden()

    await send(owner, "first book?")
    await open_chat(joiner, "Book club")
    message = joiner.locator(".message", has_text="first book?")
    await message.locator("button.comments").click()
    await joiner.fill("#f-comment", "Dune")
    await joiner.press("#f-comment", "Enter")
    await expect(joiner.locator(".comment", has_text="Dune")).to_have_count(1)
    comments = owner.locator(".message", has_text="first book?").locator(".comments")
    await expect(comments).to_have_text("1 comment")
    await comments.click()
    await expect(owner.locator(".comment", has_text="Dune")).to_have_count(1)

    await joiner.click(".chat-actions >> text=Members")
    await expect(joiner.locator(".members li")).to_have_text(["ginaowner", "hank"])
    await joiner.click("text=Leave group")
    await expect(chat_item(joiner, "Book club")).to_have_count(0)
    await expect(joiner.locator("#chat-title")).to_have_text("general")


async def test_schedule_and_cancel_then_a_file_up_and_down(people: People, tmp_path: Path) -> None:
    """A scheduled message is listed (on the other device too) and can be cancelled;
    an image goes up with a progress bar, shows inline, and downloads intact."""
    ivy = await people.page("ivy", register=True)
    ivy2 = await people.page("ivy")
    await ivy.fill("#composer", "see you tomorrow")
    await ivy.click("button[aria-label='Schedule this message']")
    await expect(ivy.locator("#f-text")).to_have_value("see you tomorrow")
    await ivy.click(".panel-form button:has-text('Schedule')")
    await expect(ivy.locator(".form-outcome")).to_contain_text("Scheduled for")
    await ivy2.click("text=Scheduled")
    pending = ivy2.locator(".scheduled-list li", has_text="see you tomorrow")
    await expect(pending).to_have_count(1)
    await pending.locator("text=Cancel").click()
    await expect(pending).to_have_count(0)
    await ivy.click("text=Scheduled")
    await expect(ivy.locator(".scheduled-list .empty")).to_have_text("Nothing scheduled.")
    await ivy.keyboard.press("Escape")

    picture = tmp_path / "dot.png"
    picture.write_bytes(PNG)
    await ivy.set_input_files("input[type=file]", str(picture))
    image = shown_file(ivy, "dot.png").locator("img")
    await expect(image).to_have_count(1)
    await expect(image).to_have_js_property("naturalWidth", 2)  # decoded: the bytes came back
    async with ivy2.expect_download() as download_info:
        await shown_file(ivy2, "dot.png").locator("text=Download").click()
    download = await download_info.value
    saved = tmp_path / "saved.png"
    await download.save_as(saved)
    assert saved.read_bytes() == PNG


def shown_file(page: Page, name: str):  # type: ignore[no-untyped-def]
    return page.locator(".messages .message .file", has_text=name)


def png(width: int, height: int) -> bytes:
    """An RGB PNG of one colour (RFC 2083): signature, IHDR, IDAT, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x2f\x6f\xde" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = png(2, 2)


async def test_server_restart_loses_and_doubles_nothing(people: People, server: WebServer) -> None:
    """While the server restarts the page shows a banner and keeps what is typed;
    afterwards it resumes: the queued message is posted once, nothing is doubled,
    and new messages arrive live."""
    jack = await people.page("jack", register=True)
    kate = await people.page("kate", register=True)
    await start_direct(jack, "kate")
    await send(jack, "before the restart")
    await open_chat(kate, "jack")
    await expect(shown(kate, "before the restart")).to_have_count(1)

    await server.stop()
    await expect(jack.locator(".banner")).to_be_visible()
    await send(jack, "typed while it was down")
    await expect(jack.locator(".message.pending", has_text="typed while")).to_have_count(1)
    await server.start()
    await expect(jack.locator(".banner")).to_be_hidden(timeout=15_000)
    await expect(kate.locator(".banner")).to_be_hidden(timeout=15_000)
    for page in (jack, kate):
        await expect(shown(page, "typed while it was down")).to_have_count(1)
        await expect(shown(page, "before the restart")).to_have_count(1)
    await expect(jack.locator(".message.pending")).to_have_count(0)
    async with user_device(server.url, "kate", register=False) as console:
        await console.call("send", user="jack", text="after the restart")
        history = await console.call("history", user="jack")
    await expect(shown(jack, "after the restart")).to_have_count(1)
    texts = [message["text"] for message in history["messages"]]
    assert texts == ["before the restart", "typed while it was down", "after the restart"]
    assert await jack.locator(".messages .message").count() == 3


PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


async def test_markup_from_people_renders_as_text(people: People) -> None:
    """HTML and script in a message (in the chat and in search results) and in a group
    title show as the characters typed and never run. (User names cannot hold markup:
    the server allows A-Z a-z 0-9 _ . -)"""
    lena = await people.page("lena", register=True)
    mike = await people.page("mike", register=True)
    await lena.click("text=New group")
    await lena.fill("#f-title", PAYLOAD)
    await lena.press("#f-title", "Enter")
    await lena.fill("#f-invitee", "mike")
    await lena.press("#f-invitee", "Enter")
    await send(lena, f"<b>bold?</b> {PAYLOAD}")
    await expect(chat_item(mike, "<img src=x")).to_have_count(1)
    await open_chat(mike, "<img src=x")
    await expect(shown(mike, "<b>bold?</b>")).to_have_count(1)
    await mike.keyboard.press("Control+K")
    await mike.keyboard.type("bold")
    await mike.keyboard.press("Enter")
    await expect(mike.locator(".search-results .result")).to_contain_text(["<b>bold?</b>"])
    assert await mike.locator(".search-results img, .search-results b").count() == 0
    await mike.keyboard.press("Escape")
    for page in (lena, mike):
        await expect(page.locator("#chat-title")).to_have_text(PAYLOAD)
        assert await page.locator(".messages img, .chat-list img, #chat-title img").count() == 0
        assert await page.locator(".messages b").count() == 0
        assert await page.evaluate("() => window.__xss") is None


async def test_a_page_of_another_origin_cannot_connect(
    people: People, server: WebServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The browser's own Origin decides: a page of the server's origin connects, one
    of another origin (here 127.0.0.1 against localhost) is refused the upgrade by the
    server. (The app's page could not even try: its CSP allows its own origin only.)"""
    page = await people.page()
    await page.goto("/healthz")  # a page of this origin without the app's CSP
    port = server.config.port
    opened = """(url) => new Promise((done) => {
        const socket = new WebSocket(url);
        socket.onopen = () => { socket.close(); done("open"); };
        socket.onerror = () => done("refused");
    })"""
    assert await page.evaluate(opened, f"ws://127.0.0.1:{port}/") == "open"
    caplog.set_level(logging.INFO, "messenger.server.transport")
    assert await page.evaluate(opened, f"ws://localhost:{port}/") == "refused"
    assert f"refused a WebSocket from origin 'http://127.0.0.1:{port}'" in caplog.text


async def test_every_error_is_said_plainly(people: People, tmp_path: Path) -> None:
    """Wrong password, throttled sign-in, a taken name, the general chat's allowance
    and its limit, a ban after a report, and a file over the limit: each a sentence."""
    nora = await people.page("nora", register=True)
    other = await people.page()
    await sign_in_fails(other, "nora", "wrong password", "Wrong user name or password.")
    await sign_in_fails(other, "nora", "wrong password", "Wrong user name or password.")
    await sign_in_fails(other, "nora", PASSWORD, "Too many failed sign-ins. Try again in 1 s.")
    await other.fill("#signin-user", "NORA")
    await other.click("text=Create account")
    await expect(other.locator("#signin-error")).to_have_text(
        "That user name is taken. Choose another one."
    )

    for number in range(1, 7):
        await send(nora, f"note {number}")
        await expect(shown(nora, f"note {number}")).to_have_count(1)
        left = 6 - number
        if left <= 5:
            await expect(nora.locator(".allowance")).to_contain_text(f"{left} message")
    await send(nora, "one too many")
    await expect(nora.locator(".composer .form-error")).to_contain_text(
        "You have sent too many messages here for now. Try again in"
    )

    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 300_000)
    await nora.set_input_files("input[type=file]", str(big))
    await expect(nora.locator(".composer .form-error")).to_have_text(
        "That file is too large: the limit is 195 KiB."
    )

    await sign_in(other, "omar", register=True)
    reported = other.locator(".message", has_text="note 1")
    await reported.locator("text=Report").click()
    await other.fill("#f-reason", "spam")
    await other.click(".panel-form button.primary")
    await expect(other.locator(".form-outcome")).to_have_text("nora was reported. Thank you.")
    await expect(nora.locator(".chat-notices .warning")).to_contain_text(
        "You are banned from sending until"
    )
    await send(nora, "am I banned?")
    await expect(nora.locator(".composer .form-error")).to_contain_text(
        "You are banned from sending until"
    )


async def sign_in_fails(page: Page, user: str, password: str, error: str) -> None:
    await page.fill("#signin-user", user)
    await page.fill("#signin-password", password)
    await page.click("button:has-text('Sign in')")
    await expect(page.locator("#signin-error")).to_have_text(error)


async def new_group(owner: Page, title: str, *members: str) -> None:
    await owner.click("text=New group")
    await owner.fill("#f-title", title)
    await owner.press("#f-title", "Enter")
    for member in members:
        await owner.fill("#f-invitee", member)
        await owner.press("#f-invitee", "Enter")
        await expect(owner.locator(".members li", has_text=member)).to_have_count(1)
    await owner.keyboard.press("Escape")


async def test_edit_and_delete_live_everywhere(people: People) -> None:
    """An edit shows in place, marked, on the other member's page and in a second tab;
    the group's owner deletes a member's message and it goes from every page; Edit is
    offered on one's own messages only, Delete on one's own or any in a group one owns."""
    pia = await people.page("pia", register=True)
    quin = await people.page("quin", register=True)
    tab = await pia.context.new_page()  # the same device in a second tab
    await tab.goto("/")
    await new_group(pia, "Edits", "quin")
    await send(pia, "agenda at noon")
    await open_chat(quin, "Edits")
    await send(quin, "I will be lait")
    await open_chat(tab, "Edits")
    for page in (pia, quin, tab):
        await expect(shown(page, "I will be lait")).to_have_count(1)
    mine = quin.locator(".message", has_text="I will be lait")
    theirs = quin.locator(".message", has_text="agenda at noon")
    await expect(theirs.locator("button.edit, button.delete")).to_have_count(0)
    owned = pia.locator(".message", has_text="I will be lait")
    await expect(owned.locator("button.edit")).to_have_count(0)  # the owner may delete, not edit
    await expect(owned.locator("button.delete")).to_have_count(1)

    await mine.locator("button.edit").click()
    await expect(quin.locator("#f-text")).to_have_value("I will be lait")
    await quin.fill("#f-text", "I will be late")
    await quin.press("#f-text", "Enter")
    await expect(quin.locator(".panel")).to_be_hidden()
    for page in (pia, quin, tab):
        edited = page.locator(".message", has_text="I will be late")
        await expect(edited.locator(".edited")).to_have_text("edited")
        await expect(shown(page, "I will be lait")).to_have_count(0)
        await expect(page.locator(".messages .message")).to_have_count(2)  # in place

    await pia.locator(".message", has_text="I will be late").locator("button.delete").click()
    await expect(pia.locator(".panel-body")).to_contain_text("cannot be undone")
    await pia.click(".panel-body button.danger")
    for page in (pia, quin, tab):
        await expect(shown(page, "I will be late")).to_have_count(0)
        await expect(shown(page, "agenda at noon")).to_have_count(1)
    await expect(chat_item(quin, "Edits").locator(".chat-preview")).to_have_text(
        "pia: agenda at noon"
    )


async def test_a_mention_badges_the_chat_until_it_is_read(
    people: People, server: WebServer
) -> None:
    """A message calling me by name badges its chat live and after a sign-in (from
    `status`); reading the chat on one device clears the badge on the other too."""
    rex = await people.page("rex", register=True)
    async with user_device(server.url, "sue") as sue:
        await sue.call("send", user="rex", text="first, no mention")
        await expect(chat_item(rex, "sue")).to_have_count(1)
        await sue.call("send", user="rex", text="are you there @REX?")
        await expect(chat_item(rex, "sue").locator(".mention-badge")).to_have_count(1)
        await expect(chat_item(rex, "sue").locator(".badge")).to_have_text("2")
        rex2 = await people.page("rex")  # from status, not live
        await expect(chat_item(rex2, "sue").locator(".mention-badge")).to_have_count(1)
        await expect(chat_item(rex, "general").locator(".mention-badge")).to_have_count(0)
        await open_chat(rex, "sue")
        await expect(rex.locator(".message.mentioned")).to_have_count(1)
        for page in (rex, rex2):
            await expect(chat_item(page, "sue").locator(".mention-badge")).to_have_count(0)
            await expect(chat_item(page, "sue").locator(".badge")).to_have_count(0)
        await open_chat(rex, "general")
        sent = await sue.call("send", user="rex", text="never mind")
        for page in (rex, rex2):
            await expect(chat_item(page, "sue").locator(".badge")).to_have_text("1")
        await sue.call("edit", message=sent["message"]["id"], text="never mind, @rex")
        for page in (rex, rex2):
            await expect(chat_item(page, "sue").locator(".mention-badge")).to_have_count(1)
        await sue.call("delete", message=sent["message"]["id"])
        for page in (rex, rex2):
            await expect(chat_item(page, "sue").locator(".mention-badge")).to_have_count(0)
            await expect(chat_item(page, "sue").locator(".badge")).to_have_count(0)


async def test_presence_of_a_contact_goes_online_and_offline(
    people: People, server: WebServer
) -> None:
    """A contact's dot is lit while any device of theirs is connected and goes out with
    a "last seen" once the last one leaves; the open direct chat says so too."""
    tess = await people.page("tess", register=True)
    async with user_device(server.url, "uri") as uri:
        await uri.call("send", user="tess", text="hi tess")
        dot = chat_item(tess, "uri").locator(".presence")
        await expect(dot).to_have_class("presence online")
        await open_chat(tess, "uri")
        await expect(tess.locator(".chat-subtitle")).to_have_text("online")
    await expect(dot).to_have_class("presence")
    await expect(dot).to_have_attribute("aria-label", re.compile("^last seen "))
    await expect(tess.locator(".chat-subtitle")).to_contain_text("last seen")
    async with user_device(server.url, "uri", register=False):
        await expect(dot).to_have_class("presence online")
        await tess.reload()  # a new login asks again: presence is not resumed
        await expect(chat_item(tess, "uri").locator(".presence")).to_have_class("presence online")


async def test_search_pages_opens_the_chat_and_keeps_private_chats_private(
    people: People, server: WebServer
) -> None:
    """Search (opened with "/") finds messages of one's chats, newest first, 20 at a
    time with "More results"; a result older than what the chat loads opens its chat
    at the message, with no gap to the newest; a stranger's search of the same words
    finds nothing of that chat."""
    async with user_device(server.url, "walt") as twin, user_device(server.url, "vera") as vera:
        for number in range(1, 26):
            await vera.call("send", user="walt", text=f"haystack needle {number}")
        (chat,) = [c for c in (await twin.call("status"))["chats"] if c["kind"] == "direct"]
        await twin.call("read", chat=chat["id"], seq=25)  # read: opening loads the last 20
        walt = await people.page("walt")
        await walt.keyboard.press("/")
        await expect(walt.locator("#f-query")).to_be_focused()
        await walt.keyboard.type("NEEDLE haystack")
        await walt.keyboard.press("Enter")
        results = walt.locator(".search-results .result")
        await expect(results).to_have_count(20)
        await expect(results.first).to_contain_text("haystack needle 25")
        await expect(walt.locator(".panel .form-outcome[role=status]")).to_have_text(
            "20+ messages found."
        )
        await walt.locator("button.more").focus()
        await walt.keyboard.press("Enter")
        await expect(results).to_have_count(25)
        await expect(results.nth(20)).to_be_focused()
        await expect(walt.locator("button.more")).to_be_hidden()
        await results.filter(has_text=re.compile(r"needle 2$")).click()
        await expect(walt.locator("#chat-title")).to_have_text("@vera")
        found = walt.locator(".message.found")
        await expect(found.locator(".text")).to_have_text("haystack needle 2")
        await expect(found).to_be_focused()
        await expect(found).to_be_in_viewport()
        await expect(walt.locator(".messages .message")).to_have_count(25)

        stranger = await people.page("xena", register=True)
        await stranger.click(".sidebar-actions button.search")
        await stranger.fill("#f-query", "needle")
        await stranger.press("#f-query", "Enter")
        await expect(stranger.locator(".panel .form-outcome[role=status]")).to_have_text(
            "No messages found."
        )
        await expect(stranger.locator(".search-results li")).to_have_count(0)


# Where test_screens saves its pictures: docs/screenshots when asked
# (MESSENGER_SCREENSHOTS=docs/screenshots pytest tests/web -k screens), else tmp_path.
SCREENSHOTS = os.environ.get("MESSENGER_SCREENSHOTS")
DESKTOP = {"width": 1200, "height": 720}
PHONE = {"width": 390, "height": 760}


async def test_screens_by_keyboard_on_a_phone_and_a_desktop(
    people: People, server: WebServer, tmp_path: Path
) -> None:
    """On a phone the chat list, a chat and a panel each take the screen and work by
    keyboard alone (Tab, Enter, Shift+Enter, Esc); the main screens are saved at
    desktop and phone width, light and dark."""
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    rosa = await people.page("rosa", register=True, viewport=DESKTOP)
    sam = await people.page(viewport=PHONE)
    await shoot(sam, folder / "signin-phone-light.png")
    await sign_in(sam, "sam", register=True)
    await send(rosa, "Morning all! The build is green again.")
    await start_direct(rosa, "sam")
    await send(rosa, "Hi Sam!")  # the first message of a direct chat mentions nobody
    await expect(shown(rosa, "Hi Sam!")).to_have_count(1)
    await send(rosa, "@sam did you get the tickets?")
    await expect(shown(rosa, "did you get the tickets?")).to_have_count(1)
    await new_group(rosa, "Weekend trip", "sam")
    await send(rosa, "Train at 9:40 on Saturday, platform 4.")
    await rosa.set_input_files(
        "input[type=file]",
        files=FilePayload(name="route.png", mimeType="image/png", buffer=png(240, 120)),
    )
    await expect(shown_file(rosa, "route.png").locator("img")).to_have_js_property(
        "naturalWidth", 240
    )

    # Sam, on a phone, by keyboard: the list first, then the group, then a thread.
    await expect(sam.locator(".chat")).to_be_hidden()
    await expect(chat_item(sam, "Weekend trip").locator(".badge")).to_have_text("2")
    await expect(chat_item(sam, "rosa").locator(".mention-badge")).to_have_count(1)
    await expect(chat_item(sam, "rosa").locator(".presence.online")).to_have_count(1)
    await shoot(sam, folder / "chats-phone-light.png")
    await chat_item(sam, "Weekend trip").focus()
    await send(rosa, "Anyone up for a walk?")  # the list is redrawn: the focus stays
    await expect(chat_item(sam, "Weekend trip").locator(".badge")).to_have_text("3")
    await expect(chat_item(sam, "Weekend trip")).to_be_focused()
    await sam.keyboard.press("Enter")
    await expect(sam.locator(".sidebar")).to_be_hidden()
    await expect(sam.locator("#composer")).to_be_focused()
    await sam.keyboard.type("Count me in, @rosa!")
    await sam.keyboard.press("Shift+Enter")
    await sam.keyboard.type("I'll bring snacks.")
    await sam.keyboard.press("Enter")
    await expect(shown(sam, "I'll bring snacks.")).to_have_count(1)
    await expect(shown(rosa, "Count me in, @rosa!\nI'll bring snacks.")).to_have_count(1)
    train = rosa.locator(".message", has_text="Train at 9:40")
    await train.locator("button.edit").click()
    await rosa.fill("#f-text", "Train at 9:40 on Saturday, platform 5 (not 4).")
    await rosa.press("#f-text", "Enter")
    await expect(sam.locator(".message .edited")).to_have_count(1)
    await sam.emulate_media(color_scheme="dark")
    await shoot(sam, folder / "chat-phone-dark.png")
    thread = sam.locator(".message", has_text="Train at 9:40").locator("button.comments")
    await thread.focus()
    await sam.keyboard.press("Enter")
    await expect(sam.locator("#f-comment")).to_be_focused()
    await sam.keyboard.type("Booked two seats.")
    await sam.keyboard.press("Enter")
    await expect(sam.locator(".comment", has_text="Booked two seats.")).to_have_count(1)
    await shoot(sam, folder / "thread-phone-dark.png")
    await sam.keyboard.press("Escape")
    await expect(sam.locator(".panel")).to_be_hidden()
    await expect(sam.locator("#composer")).to_be_focused()
    await sam.keyboard.press("Control+K")
    await sam.keyboard.type("train")
    await sam.keyboard.press("Enter")
    await expect(sam.locator(".search-results .result")).to_have_count(1)
    await shoot(sam, folder / "search-phone-dark.png")
    await sam.keyboard.press("Tab")  # from the field, past "Where" and "Search", to the result
    await sam.keyboard.press("Tab")
    await sam.keyboard.press("Tab")
    await expect(sam.locator(".search-results .result")).to_be_focused()
    await sam.keyboard.press("Enter")
    await expect(sam.locator(".panel")).to_be_hidden()  # on a phone the chat takes the screen
    await expect(sam.locator(".message.found")).to_be_focused()

    await open_chat(rosa, "Weekend trip")
    await rosa.locator(".message", has_text="Train at 9:40").locator("button.comments").click()
    await expect(rosa.locator(".comment", has_text="Booked two seats.")).to_have_count(1)
    await shoot(rosa, folder / "chat-desktop-light.png")
    await rosa.emulate_media(color_scheme="dark")
    await shoot(rosa, folder / "chat-desktop-dark.png")
    await rosa.emulate_media(color_scheme="light")
    await rosa.keyboard.press("Escape")
    await expect(rosa.locator("#composer")).to_be_focused()
    await rosa.keyboard.press("Control+K")  # from the composer, where "/" is typed
    await rosa.keyboard.type("platform")
    await rosa.keyboard.press("Enter")
    await expect(rosa.locator(".search-results .result")).to_have_count(1)
    await shoot(rosa, folder / "search-desktop-light.png")


async def shoot(page: Page, path: Path) -> None:
    for toast in await page.locator(".toast").all():
        await toast.click()  # a notice read is dismissed
    await page.wait_for_timeout(100)  # let the last redraw paint
    picture = await page.screenshot(path=path, animations="disabled")
    assert picture.startswith(b"\x89PNG")


async def test_a_long_backlog_opens_whole(people: People, server: WebServer) -> None:
    """Opening a chat with more unread messages than one page shows all of them after
    the "New messages" line, and the read marker moves over exactly those."""
    async with (
        user_device(server.url, "uma") as twin,
        user_device(server.url, "vic") as writer,
    ):
        for number in range(1, 131):
            await writer.call("send", user="uma", text=f"backlog {number}")
        reader = await people.page("uma")  # signs in after: nothing came to it live
        await expect(chat_item(reader, "vic").locator(".badge")).to_have_text("130")
        await open_chat(reader, "vic")
        await expect(reader.locator(".messages .message")).to_have_count(130)
        await expect(reader.locator(".messages li").nth(0)).to_have_class("new-line")
        await expect(chat_item(reader, "vic").locator(".badge")).to_have_count(0)
        read = await twin.next_event("read")
        while read["params"]["chat"] == "general":  # the page opened the general chat first
            read = await twin.next_event("read")
    assert read["params"]["read_seq"] == 130
