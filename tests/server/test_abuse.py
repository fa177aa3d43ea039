"""Limits against abuse by users (issue 8): flood buckets, live bytes, report weight,
registrations per address, groups and invitations, paged lists, upload quotas and
a full disk, login throttles that strangers cannot turn against a user, the KDF's own
bounded pool, and look-alike names. Each runs with its limit set small."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from pathlib import Path

import orjson
import pytest

from server.app import run_server
from server.cli import parse_args
from server.config import Config
from server.domain import rules
from server.domain.events import FileUploaded
from server.domain.limits import Quotas, page, skeleton
from server.domain.model import ChatId, CommentId, FileId, MessageId, user_key
from server.domain.state import State
from server.errors import RateLimited
from tests.configs import LIMITS_OFF_ARGS
from tests.server import test_domain
from tests.server.extras_support import Clock, config_in, error_of, post
from tests.server.test_durability import server_process
from tests.server.test_snapshot import restored
from tests.wsclient import Peer, RpcError, connected, user_device

HOUR = 3600
MINUTE = test_domain.MINUTE
STRANGER = {"local_addr": ("127.0.0.2", 0)}  # another client address, on loopback


# -- the pure rules ------------------------------------------------------------------


def test_look_alike_names_share_a_skeleton() -> None:
    """I, 1 and l read alike, as do 0 and o, rn and m: TR39's skeletons over our alphabet."""
    assert skeleton("aIice") == skeleton("a1ice") == skeleton("ALICE") == skeleton("alice")
    assert skeleton("rnallory") == skeleton("mallory")
    assert skeleton("b0b") == skeleton("bob")
    assert skeleton("bob") != skeleton("rob")


def test_flood_bucket_allows_a_burst_then_its_rate() -> None:
    """A burst of sends at once, then one per 1/rate seconds; the refusal says when."""
    state = State(quotas=Quotas(flood_rate=2, flood_burst=3))
    state.apply(rules.register(state, "alice", "hash", 0))
    alice = state.user("alice")
    assert alice is not None

    def send(now: int) -> None:
        rules.check_rate(state, alice, state.general.id, now, limit=1000)
        state.apply(
            rules.post_message(
                state,
                alice,
                state.general,
                state.general.id,
                text="hi",
                now=now,
                message_id=MessageId(f"m{state.cursor}"),
                ttl_ms=0,
            )
        )

    for _ in range(3):
        send(1000)
    with pytest.raises(RateLimited) as refused:
        send(1000)
    assert refused.value.retry_after == 0.5
    send(1500)
    with pytest.raises(RateLimited):
        send(1500)


def test_what_the_limits_count_survives_a_snapshot() -> None:
    """Buckets, posts, live bytes, groups owned, stored bytes and skeletons come back
    the same from a compaction's snapshot."""
    state = State(quotas=Quotas(flood_rate=1, flood_burst=5, invite_limit=10))
    alice, bob = test_domain.register(state, "alice", "bob")
    for _ in range(2):  # gone from the snapshot, but counted
        test_domain.post(state, alice, state.general, "brief", ttl_ms=1)
    state.expire(MINUTE)
    message = test_domain.post(state, alice, state.general, "héllo", now=MINUTE)
    state.apply(
        rules.add_comment(
            state, bob, message.message, text="hi", now=MINUTE, comment_id=CommentId("c1")
        )
    )
    state.apply(rules.create_group(state, alice, "club", ChatId("g1"), MINUTE))
    state.apply(rules.invite(state, alice, "g1", "bob", MINUTE))
    state.apply(FileUploaded(FileId("f1"), "f", 300, "text/plain", "00", alice.name, MINUTE))
    again = restored(state)
    counted = ("flood_tat", "invite_tat", "posted", "live_bytes", "groups_owned", "stored_bytes")
    for user in (alice, bob):
        restored_user = again.users[user_key(user.name)]
        assert [getattr(restored_user, f) for f in counted] == [getattr(user, f) for f in counted]
    assert (again.skeletons, again.stored_bytes) == (state.skeletons, 300)
    assert (alice.posted, alice.live_bytes, bob.live_bytes, alice.groups_owned) == (3, 6, 2, 1)


def test_a_page_stops_at_its_limit_and_at_its_byte_budget() -> None:
    """page() gives at most limit items and budget bytes of JSON, and says has_more."""
    items = [f"item{n}" for n in range(10)]
    assert page(items, 0, 3, str.upper, 10_000) == (["ITEM0", "ITEM1", "ITEM2"], True)
    assert page(items, 8, 3, str.upper, 10_000) == (["ITEM8", "ITEM9"], False)
    shown, more = page(items, 0, 100, str.upper, 20)  # each is 7 bytes of JSON and a comma
    assert (shown, more) == (["ITEM0", "ITEM1"], True)


def test_every_limit_has_a_flag_that_help_lists(capsys: pytest.CaptureFixture[str]) -> None:
    """The limit flags set their Config fields; --help lists them with their defaults."""
    config = parse_args(["--flood-rate", "0.5", "--flood-burst", "3", "--register-limit", "0"])
    assert (config.flood_rate, config.flood_burst, config.register_limit) == (0.5, 3, 0)
    assert config.report_min_age == Config().report_min_age == 86400
    with pytest.raises(SystemExit):
        parse_args(["--flood-rate", "-1"])
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    shown = capsys.readouterr().out
    for flag in [*LIMITS_OFF_ARGS[::2], "--flood-burst", "--group-limit", "--max-storage"]:
        assert flag in shown, flag


# -- sends and comments -----------------------------------------------------------


async def test_flood_limit_covers_direct_chats_and_comments(tmp_path: Path) -> None:
    """Sends and comments in any chat share one bucket: -32004 with retry_after, then
    one more per 1/rate seconds; it holds across a restart (it is folded state)."""
    clock = Clock()
    config = config_in(tmp_path, flood_rate=1, flood_burst=3)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob"),
    ):
        first = (await alice.call("send", user="bob", text="1"))["message"]
        await alice.call("send", chat=first["chat"], text="2")
        await alice.call("comment", message=first["id"], text="3")
        refused = await error_of(alice, "comment", message=first["id"], text="4")
        assert refused.code == -32004
        assert refused.data["retry_after"] == 1.0
        assert (await error_of(alice, "send", chat=first["chat"], text="4")).code == -32004
        clock.advance(1)
        await alice.call("send", chat="general", text="4")
        assert (await error_of(alice, "send", chat="general", text="5")).code == -32004
    async with run_server(config, clock) as running, connected(running.url) as alice:
        await alice.login("alice")
        assert (await error_of(alice, "send", chat="general", text="5")).code == -32004


async def test_live_bytes_per_user_are_capped_until_messages_expire(tmp_path: Path) -> None:
    """Over max_live_bytes of text in live messages and comments: -32006 with data.max;
    room comes back as they expire."""
    clock = Clock()
    config = config_in(tmp_path, max_live_bytes=10, message_ttl=60)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        message = await post(alice, "general", "hello")
        await alice.call("comment", message=message["id"], text="élan")  # 5 bytes
        refused = await error_of(alice, "send", user="bob", text="!")
        assert (refused.code, refused.data) == (-32006, {"max": 10})
        assert (await error_of(alice, "comment", message=message["id"], text="!")).code == -32006
        await bob.call("comment", message=message["id"], text="bob's own")
        clock.advance(61)
        await post(alice, "general", "0123456789")


# -- reports and registrations --------------------------------------------------------


async def test_reports_from_fresh_or_silent_accounts_do_not_ban(tmp_path: Path) -> None:
    """A report counts only from an account report_min_age old that has posted; three
    such reports still ban."""
    clock = Clock()
    config = config_in(tmp_path, report_min_age=HOUR)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "mallory") as mallory,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
    ):
        for reporter in (alice, bob, carol):
            await post(reporter, "general", "hi")  # posted, but fresh
            await reporter.call("report", user="mallory")
        await post(mallory, "general", "still here")
        clock.advance(HOUR)
        async with user_device(running.url, "dave") as dave:  # fresh: no weight
            await dave.call("report", user="mallory")
        await alice.call("report", user="mallory")
        await bob.call("report", user="mallory")
        await post(mallory, "general", "still here")
        await carol.call("report", user="mallory")
        assert (await error_of(mallory, "send", chat="general", text="x")).code == -32005


async def test_an_old_account_that_never_posted_does_not_count(tmp_path: Path) -> None:
    """Age alone is not enough: the reporter must have posted a message."""
    clock = Clock()
    config = config_in(tmp_path, report_min_age=HOUR, report_threshold=1)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "mallory") as mallory,
        user_device(running.url, "alice") as alice,
    ):
        clock.advance(HOUR)
        await alice.call("report", user="mallory")
        await post(mallory, "general", "still here")
        await post(alice, "general", "now I have posted")
        await alice.call("report", user="mallory")
        assert (await error_of(mallory, "send", chat="general", text="x")).code == -32005


async def test_registrations_are_limited_per_address_per_hour(tmp_path: Path) -> None:
    """register_limit registrations an hour from one address; others are not affected."""
    clock = Clock()
    config = config_in(tmp_path, register_limit=2)
    async with run_server(config, clock) as running, connected(running.url) as peer:
        await peer.call("register", user="one", password="password1")
        await peer.call("register", user="two", password="password1")
        refused = await error_of(peer, "register", user="three", password="password1")
        assert refused.code == -32004
        assert refused.data["retry_after"] == HOUR
        async with connected(running.url, **STRANGER) as other:
            await other.call("register", user="three", password="password1")
        clock.advance(HOUR)
        await peer.call("register", user="four", password="password1")


# -- groups, invitations and paged lists --------------------------------------------


async def test_groups_per_owner_and_invitations_per_hour_are_limited(tmp_path: Path) -> None:
    """group_limit groups per owner (-32002); invite_limit invitations an hour (-32004
    with retry_after), also after a restart."""
    clock = Clock()
    config = config_in(tmp_path, group_limit=2, invite_limit=2)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob"),
        user_device(running.url, "carol"),
        user_device(running.url, "dave"),
    ):
        first = (await alice.call("chat.create", title="one"))["chat"]["id"]
        await alice.call("chat.create", title="two")
        assert (await error_of(alice, "chat.create", title="three")).code == -32002
        await alice.call("chat.invite", chat=first, user="bob")
        await alice.call("chat.invite", chat=first, user="carol")
        refused = await error_of(alice, "chat.invite", chat=first, user="dave")
        assert refused.code == -32004
        assert refused.data["retry_after"] == HOUR / 2
    async with run_server(config, clock) as running, connected(running.url) as alice:
        await alice.login("alice")
        assert (await error_of(alice, "chat.invite", chat=first, user="dave")).code == -32004
        assert (await error_of(alice, "chat.create", title="three")).code == -32002
        clock.advance(HOUR / 2)
        await alice.call("chat.invite", chat=first, user="dave")


async def test_status_members_and_requests_come_in_pages(tmp_path: Path) -> None:
    """offset and limit page status's chats, chat.members and chat.requests; has_more
    says whether more follow."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
    ):
        groups = [(await alice.call("chat.create", title=f"g{n}"))["chat"]["id"] for n in range(4)]
        status = await alice.call("status", limit=2)
        assert ([c["id"] for c in status["chats"]], status["has_more"]) == (
            ["general", groups[0]],
            True,
        )
        status = await alice.call("status", offset=3, limit=2)
        assert ([c["id"] for c in status["chats"]], status["has_more"]) == (groups[2:], False)
        link = (await alice.call("chat.link", chat=groups[0]))["link"]
        for peer in (bob, carol):
            await peer.call("chat.join", link=link)
        requests = await alice.call("chat.requests", chat=groups[0], limit=1)
        assert ([r["user"] for r in requests["requests"]], requests["has_more"]) == (["bob"], True)
        requests = await alice.call("chat.requests", chat=groups[0], offset=1)
        assert ([r["user"] for r in requests["requests"]], requests["has_more"]) == (
            ["carol"],
            False,
        )
        members = await alice.call("chat.members", chat="general", offset=1, limit=1)
        assert members == {"owner": None, "members": ["bob"], "has_more": True}
        assert (await error_of(alice, "status", limit=1001)).code == -32602


async def test_status_of_an_invite_bomb_victim_fits_in_a_frame(tmp_path: Path) -> None:
    """Invited to more groups than a frame can list, a user's status is a page within
    the reply budget, and the rest follow with offset."""
    title = "\u0001" * 100  # escaped as \\u0001: 600 bytes of JSON each
    async with (
        run_server(config_in(tmp_path, group_limit=0, invite_limit=0), Clock()) as running,
        user_device(running.url, "mallory") as mallory,
        user_device(running.url, "victim") as victim,
    ):
        for first in range(0, 1600, 100):
            batch = [
                {"jsonrpc": "2.0", "method": "chat.create", "params": {"title": title}, "id": n}
                for n in range(first, first + 100)
            ]
            created = await mallory.send_raw(orjson.dumps(batch).decode())
            invites = [
                {
                    "jsonrpc": "2.0",
                    "method": "chat.invite",
                    "params": {"chat": reply["result"]["chat"]["id"], "user": "victim"},
                    "id": reply["id"],
                }
                for reply in created
            ]
            assert all(
                "result" in reply
                for reply in await mallory.send_raw(orjson.dumps(invites).decode())
            )
        seen = 0
        while True:
            frame = await victim.send_raw(
                orjson.dumps(
                    {"jsonrpc": "2.0", "method": "status", "params": {"offset": seen}, "id": "s"}
                ).decode()
            )
            assert len(orjson.dumps(frame)) < 2**20
            seen += len(frame["result"]["chats"])
            if not frame["result"]["has_more"]:
                break
        assert seen == 1601


# -- files ------------------------------------------------------------------------------


async def upload(peer: Peer, data: bytes) -> None:
    started = await peer.call("upload.begin", name="f.bin", size=len(data))
    await peer.call("upload.chunk", upload=started["upload"], data=base64.b64encode(data).decode())
    await peer.call("upload.finish", upload=started["upload"])


async def test_stored_bytes_are_limited_per_user_and_in_all(tmp_path: Path) -> None:
    """A user's stored files and uploads in progress stay within max_user_storage, all
    stored files within max_storage, checked at begin and again at finish (-32006 with
    data.max); a server full of uploads in progress says so (-32004), not a user limit."""
    config = config_in(
        tmp_path, max_file_size=1000, max_user_storage=1500, max_storage=2000, uploads_in_all=3
    )
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
    ):
        await upload(alice, b"a" * 1000)
        refused = await error_of(alice, "upload.begin", name="f", size=501)
        assert (refused.code, refused.data) == (-32006, {"max": 1500})
        await alice.call("upload.begin", name="f", size=500)
        assert (await error_of(alice, "upload.begin", name="f", size=1)).code == -32006
        first = await bob.call("upload.begin", name="f", size=800)
        later = await carol.call("upload.begin", name="f", size=900)
        refused = await error_of(carol, "upload.begin", name="f", size=1)
        assert (refused.code, refused.data["retry_after"]) == (-32004, 600)
        for peer, started, data in ((bob, first, b"b" * 800), (carol, later, b"c" * 900)):
            chunk = base64.b64encode(data).decode()
            await peer.call("upload.chunk", upload=started["upload"], data=chunk)
        await bob.call("upload.finish", upload=first["upload"])  # 1800 of 2000 stored
        refused = await error_of(carol, "upload.finish", upload=later["upload"])
        assert (refused.code, refused.data) == (-32006, {"max": 200})
        assert (await error_of(carol, "upload.begin", name="f", size=201)).data == {"max": 200}


async def test_an_upload_the_disk_cannot_hold_is_refused_before_any_data(tmp_path: Path) -> None:
    """upload.begin leaves disk_reserve free for the log: a file that would eat into it
    is -32006 at once."""
    config = config_in(tmp_path, disk_reserve=2**62)
    async with run_server(config, Clock()) as running, user_device(running.url, "alice") as alice:
        refused = await error_of(alice, "upload.begin", name="f", size=10)
        assert (refused.code, refused.data) == (-32006, {"max": 0})


async def test_a_file_that_does_not_fit_is_refused_and_the_server_goes_on(tmp_path: Path) -> None:
    """A write of an upload failing for room (EFBIG under ulimit -f, as a full disk) is
    -32006; its partial file is removed; the server keeps serving and logging."""
    state_dir = tmp_path / "state"
    async with (
        server_process(state_dir, *LIMITS_OFF_ARGS, file_size_blocks=128) as server,
        user_device(server.url, "alice") as alice,
    ):
        started = await alice.call("upload.begin", name="big.bin", size=2**20)
        data = base64.b64encode(b"x" * 2**18).decode()
        refused = await error_of(alice, "upload.chunk", upload=started["upload"], data=data)
        assert (refused.code, refused.data) == (-32006, {"max": 0})
        assert list((state_dir / "uploads").iterdir()) == []
        assert (await error_of(alice, "upload.chunk", upload=started["upload"], data="")).code == (
            -32003
        )
        await post(alice, "general", "still here")
        assert "Traceback" not in server.errors()


# -- logins -----------------------------------------------------------------------------


async def test_a_stranger_cannot_lock_a_user_out(tmp_path: Path) -> None:
    """Failed logins throttle the (name, address) they came from, not the name: the user
    logs in from their own address while a stranger's guesses are refused."""
    config = config_in(tmp_path, login_attempts=2)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice"),
        connected(running.url, **STRANGER) as stranger,
    ):
        for _ in range(2):
            assert (await error_of(stranger, "login", user="alice", password="wrong-one")).code == (
                -32001
            )
        refused = await error_of(stranger, "login", user="alice", password="password1")
        assert refused.code == -32004
        async with connected(running.url) as own:
            await own.login("alice")


async def test_failed_logins_from_one_address_are_throttled_across_names(
    tmp_path: Path,
) -> None:
    """Spraying names from one address: after address_login_attempts failures that
    address is refused (-32004) for every name; other addresses are not."""
    config = config_in(tmp_path, address_login_attempts=3)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice"),
        connected(running.url, **STRANGER) as stranger,
    ):
        for name in ("bob", "carol", "dave"):
            assert (await error_of(stranger, "login", user=name, password="password1")).code == (
                -32001
            )
        assert (await error_of(stranger, "login", user="alice", password="password1")).code == (
            -32004
        )
        async with connected(running.url) as own:
            await own.login("alice")


async def test_password_hashing_has_a_bounded_queue(tmp_path: Path) -> None:
    """KDF work past kdf_queue jobs (running or waiting) is refused with -32004 at once."""
    config = config_in(tmp_path, scrypt_n=2**15, kdf_threads=1, kdf_queue=1)
    async with (
        run_server(config, Clock()) as running,
        contextlib.AsyncExitStack() as stack,
    ):
        peers = [await stack.enter_async_context(connected(running.url)) for _ in range(4)]
        results = await asyncio.gather(
            *(
                peer.call("register", user=f"user{n}", password="password1")
                for n, peer in enumerate(peers)
            ),
            return_exceptions=True,
        )
        refused = [r.code for r in results if isinstance(r, RpcError)]
        assert 1 <= len(refused) < 4
        assert set(refused) == {-32004}


# -- names --------------------------------------------------------------------------------


async def test_look_alike_names_are_taken_and_a_name_needs_a_letter(tmp_path: Path) -> None:
    """aIice, a1ice beside alice and rnallory beside mallory are -32007; ., .., - are
    -32602; a plainly different name is fine, also after a restart."""
    config = config_in(tmp_path)
    async with run_server(config, Clock()) as running, connected(running.url) as peer:
        for name in ("alice", "mallory"):
            await peer.call("register", user=name, password="password1")
        for name in ("aIice", "a1ice", "ALlCE", "rnallory"):
            refused = await error_of(peer, "register", user=name, password="password1")
            assert refused.code == -32007, name
        for name in (".", "..", "-", "_._"):
            refused = await error_of(peer, "register", user=name, password="password1")
            assert refused.code == -32602, name
        await peer.call("register", user="alicia", password="password1")
    async with run_server(config, Clock()) as running, connected(running.url) as peer:
        assert (await error_of(peer, "register", user="Rnallory", password="password1")).code == (
            -32007
        )
