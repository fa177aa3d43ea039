"""Private groups end to end on a real server: creating, inviting, joining by link
with the owner's approval, leaving, what a non-member can learn, and a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.app import run_server
from tests.server.extras_support import (
    Clock,
    config_in,
    error_of,
    events_until_quiet,
    post,
    texts,
)
from tests.wsclient import Peer, connected, user_device


async def create_group(owner: Peer, title: str = "team") -> str:
    chat_id: str = (await owner.call("chat.create", title=title))["chat"]["id"]
    return chat_id


async def chat_ids(peer: Peer) -> list[str]:
    return [chat["id"] for chat in (await peer.call("status"))["chats"]]


async def test_create_tells_every_device_of_the_owner(tmp_path: Path) -> None:
    """chat.create answers the new group and pushes chat.joined to all the owner's devices."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as phone,
        user_device(running.url, "alice", register=False) as laptop,
        user_device(running.url, "bob") as bob,
    ):
        chat = (await phone.call("chat.create", title="Team"))["chat"]
        assert chat == {
            "id": chat["id"],
            "kind": "group",
            "title": "Team",
            "owner": "alice",
            "unread": 0,
            "read_seq": 0,
            "last_seq": 0,
            "mentions": 0,
        }
        for device in (phone, laptop):
            event = await device.next_event()
            assert (event["method"], event["params"]["chat"]) == ("chat.joined", chat)
        await bob.no_event()
        assert chat["id"] in await chat_ids(laptop)
        assert chat["id"] not in await chat_ids(bob)


async def test_invite_is_for_the_owner_and_joins_the_invitee_at_once(tmp_path: Path) -> None:
    """The owner's invite pushes chat.joined; a member's invite is -32002, an outsider's -32003."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "bob", register=False) as bob_laptop,
        user_device(running.url, "carol") as carol,
        user_device(running.url, "dave") as dave,
    ):
        group = await create_group(alice)
        assert await alice.call("chat.invite", chat=group, user="bob") == {}
        for device in (bob, bob_laptop):
            event = await device.next_event("chat.joined")
            assert event["params"]["chat"]["id"] == group
            assert event["params"]["chat"]["owner"] == "alice"
        assert (await error_of(bob, "chat.invite", chat=group, user="carol")).code == -32002
        assert (await error_of(dave, "chat.invite", chat=group, user="carol")).code == -32003
        assert (await error_of(alice, "chat.invite", chat=group, user="bob")).code == -32007
        assert (await error_of(alice, "chat.invite", chat=group, user="nobody")).code == -32003
        await carol.no_event()
        members = await alice.call("chat.members", chat=group)
        assert members == {"owner": "alice", "members": ["alice", "bob"], "has_more": False}


async def test_join_by_link_waits_for_the_owners_approval(tmp_path: Path) -> None:
    """join is pending and tells the owner; requests lists it; approve pushes chat.joined."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path), clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "alice", register=False) as alice_laptop,
        user_device(running.url, "bob") as bob,
    ):
        group = await create_group(alice)
        await events_until_quiet(alice, 0.05)
        await events_until_quiet(alice_laptop, 0.05)
        link = (await alice.call("chat.link", chat=group))["link"]
        assert isinstance(link, str)
        assert len(link) >= 16
        clock.advance(5)
        joined = await bob.call("chat.join", link=link)
        assert joined == {"status": "pending", "chat": {"id": group, "title": "team"}}
        for device in (alice, alice_laptop):
            event = await device.next_event()
            assert event["method"] == "chat.join_request"
            assert {k: v for k, v in event["params"].items() if k != "cursor"} == {
                "chat": group,
                "user": "bob",
            }
        requests = await alice.call("chat.requests", chat=group)
        assert requests == {"requests": [{"user": "bob", "ts": clock.now}], "has_more": False}
        assert (await error_of(bob, "history", chat=group)).code == -32003
        assert (await error_of(bob, "chat.requests", chat=group)).code == -32003

        assert await alice.call("chat.approve", chat=group, user="bob") == {}
        assert (await bob.next_event("chat.joined"))["params"]["chat"]["id"] == group
        assert await alice.call("chat.requests", chat=group) == {"requests": [], "has_more": False}
        await post(bob, group, "thanks")
        assert texts((await alice.call("history", chat=group))["messages"]) == ["thanks"]
        assert (await error_of(bob, "chat.requests", chat=group)).code == -32002


async def test_declined_request_is_told_to_the_asker(tmp_path: Path) -> None:
    """decline pushes chat.declined to the asker, who stays out (and may ask again)."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        group = await create_group(alice)
        link = (await alice.call("chat.link", chat=group))["link"]
        await bob.call("chat.join", link=link)
        assert await alice.call("chat.decline", chat=group, user="bob") == {}
        event = await bob.next_event()
        assert (event["method"], event["params"]["chat"]) == ("chat.declined", group)
        assert event["params"]["title"] == "team"
        assert await alice.call("chat.requests", chat=group) == {"requests": [], "has_more": False}
        assert (await error_of(bob, "history", chat=group)).code == -32003
        assert group not in await chat_ids(bob)
        assert (await bob.call("chat.join", link=link))["status"] == "pending"


async def test_deciding_a_request_twice(tmp_path: Path) -> None:
    """A second decision after an approval is -32007; after a decline, -32003 (nothing pending)."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
    ):
        group = await create_group(alice)
        link = (await alice.call("chat.link", chat=group))["link"]
        await bob.call("chat.join", link=link)
        await carol.call("chat.join", link=link)
        await alice.call("chat.approve", chat=group, user="bob")
        await alice.call("chat.decline", chat=group, user="carol")
        for method in ("chat.approve", "chat.decline"):
            assert (await error_of(alice, method, chat=group, user="bob")).code == -32007
            assert (await error_of(alice, method, chat=group, user="carol")).code == -32003
        assert (await error_of(bob, "chat.approve", chat=group, user="carol")).code == -32002
        members = await alice.call("chat.members", chat=group)
        assert members["members"] == ["alice", "bob"]


async def test_a_new_link_revokes_the_old_one(tmp_path: Path) -> None:
    """After chat.link again, joining with the previous link is -32003; the new one works."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        group = await create_group(alice)
        old = (await alice.call("chat.link", chat=group))["link"]
        new = (await alice.call("chat.link", chat=group))["link"]
        assert new != old
        assert (await error_of(bob, "chat.join", link=old)).code == -32003
        assert (await error_of(bob, "chat.join", link="made-up")).code == -32003
        assert (await bob.call("chat.join", link=new))["status"] == "pending"
        assert (await error_of(bob, "chat.link", chat=group)).code == -32003


async def test_asking_twice_conflicts_and_a_member_is_told_member(tmp_path: Path) -> None:
    """A second join while pending is -32007; a member (the owner too) joining gets "member"."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        group = await create_group(alice)
        link = (await alice.call("chat.link", chat=group))["link"]
        await bob.call("chat.join", link=link)
        assert (await error_of(bob, "chat.join", link=link)).code == -32007
        requests = (await alice.call("chat.requests", chat=group))["requests"]
        assert [r["user"] for r in requests] == ["bob"]
        assert (await alice.call("chat.join", link=link))["status"] == "member"
        await alice.call("chat.approve", chat=group, user="bob")
        assert (await bob.call("chat.join", link=link))["status"] == "member"


async def test_a_non_member_learns_nothing_about_a_group(tmp_path: Path) -> None:
    """To an outsider a group answers like a chat that does not exist, and pushes nothing."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
    ):
        group = await create_group(alice)
        await alice.call("chat.invite", chat=group, user="bob")
        message = await post(alice, group, "members only")
        await bob.call("comment", message=message["id"], text="indeed")
        await bob.call("read", chat=group, seq=1)
        fake = "g" + "0" * 16
        for method, params in (
            ("history", {}),
            ("chat.members", {}),
            ("send", {"text": "let me in"}),
            ("read", {"seq": 1}),
            ("chat.requests", {}),
            ("chat.link", {}),
            ("chat.invite", {"user": "carol"}),
            ("chat.leave", {}),
        ):
            real = await error_of(carol, method, chat=group, **params)
            made_up = await error_of(carol, method, chat=fake, **params)
            assert real.code == made_up.code == -32003, method
            assert str(real).replace(group, fake) == str(made_up), method
        assert (await error_of(carol, "comments", message=message["id"])).code == -32003
        assert group not in await chat_ids(carol)
        assert await carol.call("unread") == {"chats": []}
        await carol.no_event()


async def test_after_leaving_a_member_receives_nothing_more(tmp_path: Path) -> None:
    """chat.leave answers {}; the leaver gets chat.left, then no messages, and is not listed."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        group = await create_group(alice)
        await alice.call("chat.invite", chat=group, user="bob")
        await bob.next_event("chat.joined")
        assert await bob.call("chat.leave", chat=group) == {}
        event = await bob.next_event()
        assert (event["method"], event["params"]["chat"]) == ("chat.left", group)
        await post(alice, group, "after you left")
        await bob.no_event()
        assert (await error_of(bob, "history", chat=group)).code == -32003
        assert (await error_of(bob, "send", chat=group, text="back?")).code == -32003
        assert group not in await chat_ids(bob)
        members = await alice.call("chat.members", chat=group)
        assert members == {"owner": "alice", "members": ["alice"], "has_more": False}


async def test_the_owner_cannot_leave_and_only_groups_can_be_left(tmp_path: Path) -> None:
    """The owner leaving is -32002; so is leaving the general chat or a direct chat."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob"),
    ):
        group = await create_group(alice)
        assert (await error_of(alice, "chat.leave", chat=group)).code == -32002
        assert (await error_of(alice, "chat.leave", chat="general")).code == -32002
        direct = (await alice.call("send", user="bob", text="hi"))["message"]["chat"]
        assert (await error_of(alice, "chat.leave", chat=direct)).code == -32002
        assert group in await chat_ids(alice)


async def test_members_lists_the_owner_and_every_member(tmp_path: Path) -> None:
    """chat.members gives the owner and all members, whether invited or approved."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
        user_device(running.url, "dave") as dave,
    ):
        group = await create_group(alice)
        await alice.call("chat.invite", chat=group, user="carol")
        link = (await alice.call("chat.link", chat=group))["link"]
        await bob.call("chat.join", link=link)
        await dave.call("chat.join", link=link)
        await alice.call("chat.approve", chat=group, user="bob")
        for peer in (alice, bob, carol):
            members = await peer.call("chat.members", chat=group)
            assert members["owner"] == "alice"
            assert sorted(members["members"]) == ["alice", "bob", "carol"]


async def test_groups_survive_a_restart(tmp_path: Path) -> None:
    """Members, pending requests, the current link, messages and departures survive a restart."""
    clock = Clock()
    config = config_in(tmp_path)
    async with (
        run_server(config, clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
        user_device(running.url, "dave") as dave,
        user_device(running.url, "erin") as erin,
        user_device(running.url, "frank"),
    ):
        group = await create_group(alice, "Team")
        await alice.call("chat.invite", chat=group, user="bob")
        await alice.call("chat.invite", chat=group, user="erin")
        old_link = (await alice.call("chat.link", chat=group))["link"]
        link = (await alice.call("chat.link", chat=group))["link"]
        await carol.call("chat.join", link=link)
        pending_at = clock.now
        clock.advance(1)
        await dave.call("chat.join", link=link)
        await alice.call("chat.decline", chat=group, user="dave")
        await erin.call("chat.leave", chat=group)
        await post(bob, group, "before restart")
        before = await group_picture(alice, bob, group)
        tokens = {"alice": alice.token, "bob": bob.token}
    assert before["members"] == {"owner": "alice", "members": ["alice", "bob"], "has_more": False}
    assert before["requests"] == {
        "requests": [{"user": "carol", "ts": pending_at}],
        "has_more": False,
    }
    for _ in range(2):  # the first start compacts the log, the second replays the snapshot
        async with (
            run_server(config, clock) as running,
            connected(running.url) as alice,
            connected(running.url) as bob,
            connected(running.url) as erin,
        ):
            await alice.call("login", user="alice", token=tokens["alice"])
            await bob.call("login", user="bob", token=tokens["bob"])
            await erin.login("erin")
            assert await group_picture(alice, bob, group) == before
            assert (await error_of(erin, "history", chat=group)).code == -32003
    async with (
        run_server(config, clock) as running,
        connected(running.url) as alice,
        connected(running.url) as bob,
        connected(running.url) as carol,
        connected(running.url) as frank,
    ):
        for peer, name in ((alice, "alice"), (bob, "bob"), (carol, "carol"), (frank, "frank")):
            await peer.login(name)
        assert (await error_of(frank, "chat.join", link=old_link)).code == -32003
        assert (await frank.call("chat.join", link=link))["status"] == "pending"
        assert (await error_of(carol, "chat.join", link=link)).code == -32007
        await alice.call("chat.approve", chat=group, user="carol")
        await post(carol, group, "after restart")
        history = await bob.call("history", chat=group)
        assert texts(history["messages"]) == ["before restart", "after restart"]


async def group_picture(owner: Peer, member: Peer, group: str) -> dict[str, Any]:
    """What the owner and a member can see of a group."""
    return {
        "members": await member.call("chat.members", chat=group),
        "requests": await owner.call("chat.requests", chat=group),
        "history": await member.call("history", chat=group),
        "owner_chat": next(c for c in (await owner.call("status"))["chats"] if c["id"] == group),
        "member_chat": next(c for c in (await member.call("status"))["chats"] if c["id"] == group),
    }


async def test_a_schedule_in_a_group_left_since_is_cancelled_not_posted(tmp_path: Path) -> None:
    """A message scheduled into a group its author has left is cancelled when due."""
    clock = Clock()
    async with (
        run_server(config_in(tmp_path), clock) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        group = await create_group(alice)
        await alice.call("chat.invite", chat=group, user="bob")
        result = await bob.call("send", chat=group, text="ghost", send_at=clock.now + 5000)
        await bob.call("chat.leave", chat=group)
        await events_until_quiet(alice, 0.05)
        await events_until_quiet(bob, 0.05)
        clock.advance(5)
        event = await bob.next_event()
        assert (event["method"], event["params"]["id"]) == (
            "scheduled.cancelled",
            result["scheduled"]["id"],
        )
        await alice.no_event()
        assert (await alice.call("history", chat=group))["messages"] == []
        assert await bob.call("scheduled") == {"scheduled": [], "has_more": False}


async def test_members_and_the_owners_devices_hear_of_joins_leaves_and_declines(
    tmp_path: Path,
) -> None:
    """Invite, approve and leave tell the other members who joined or left; a decline
    tells every device of the owner; nobody hears of their own joining twice."""
    async with (
        run_server(config_in(tmp_path), Clock()) as running,
        user_device(running.url, "alice") as phone,
        user_device(running.url, "alice", register=False) as laptop,
        user_device(running.url, "bob") as bob,
        user_device(running.url, "carol") as carol,
        user_device(running.url, "dave") as dave,
    ):
        group = await create_group(phone)
        await phone.call("chat.invite", chat=group, user="bob")
        for device in (phone, laptop):
            event = await device.next_event("chat.member_joined")
            assert {k: v for k, v in event["params"].items() if k != "cursor"} == {
                "chat": group,
                "user": "bob",
            }
        assert (await bob.next_event())["method"] == "chat.joined"
        await bob.no_event()

        link = (await phone.call("chat.link", chat=group))["link"]
        await carol.call("chat.join", link=link)
        await dave.call("chat.join", link=link)
        await laptop.call("chat.approve", chat=group, user="carol")
        for device in (phone, laptop, bob):
            event = await device.next_event("chat.member_joined")
            assert event["params"]["user"] == "carol"
        await laptop.call("chat.decline", chat=group, user="dave")
        for device in (phone, laptop):
            event = await device.next_event("chat.request_declined")
            assert (event["params"]["chat"], event["params"]["user"]) == (group, "dave")
        assert (await dave.next_event("chat.declined"))["params"]["chat"] == group
        await bob.no_event()

        await bob.call("chat.leave", chat=group)
        for device in (phone, laptop, carol):
            event = await device.next_event("chat.member_left")
            assert (event["params"]["chat"], event["params"]["user"]) == (group, "bob")
        assert (await bob.next_event())["method"] == "chat.left"
        await bob.no_event()
        await dave.no_event()


async def test_joins_and_leaves_are_resumed_after_a_restart(tmp_path: Path) -> None:
    """A member's device that was away gets chat.member_joined and chat.member_left on
    resume, from the log replayed at start."""
    config = config_in(tmp_path)
    async with (
        run_server(config, Clock()) as running,
        user_device(running.url, "alice") as alice,
        user_device(running.url, "bob") as bob,
    ):
        group = await create_group(alice)
        await alice.next_event("chat.joined")
        since, token = alice.cursor, alice.token
        await alice.call("chat.invite", chat=group, user="bob")
        await bob.call("chat.leave", chat=group)
    async with (
        run_server(config, Clock()) as running,
        connected(running.url) as again,
    ):
        await again.call("login", user="alice", token=token, since=since)
        joined = await again.next_event()
        left = await again.next_event()
        assert [joined["method"], left["method"]] == ["chat.member_joined", "chat.member_left"]
        assert joined["params"]["user"] == left["params"]["user"] == "bob"
