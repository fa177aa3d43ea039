"""The client's picture of its chats: unread counts, read markers, names, dedupe."""

from __future__ import annotations

from typing import Any

import pytest

from client.model import ChatId, FileId, Model, Target


def message(chat: str, seq: int, author: str = "bob", id: str | None = None) -> dict[str, Any]:
    return {
        "id": id or f"{chat}-{seq}",
        "chat": chat,
        "seq": seq,
        "author": author,
        "text": "hi",
        "ts": 0,
        "expires_at": None,
        "file": None,
        "comments": 0,
    }


def model() -> Model:
    model = Model("alice")
    model.load_status(
        {
            "chats": [
                {
                    "id": "general",
                    "kind": "general",
                    "title": "general",
                    "unread": 1,
                    "read_seq": 2,
                    "last_seq": 3,
                },
                {
                    "id": "d1",
                    "kind": "direct",
                    "title": "Bob",
                    "unread": 0,
                    "read_seq": 0,
                    "last_seq": 0,
                },
            ]
        }
    )
    return model


def test_a_message_is_shown_once() -> None:
    """The second sighting of a message id (event after reply, replay) is not news."""
    known = model()
    assert known.message_seen(message("general", 4))
    assert not known.message_seen(message("general", 4))


def test_new_messages_count_as_unread_and_reading_clears_them() -> None:
    """Unread grows with each new message past the marker and shrinks as it moves."""
    known = model()
    known.message_seen(message("general", 4))
    known.message_seen(message("general", 5))
    assert known.chats[ChatId("general")].unread == 3
    assert known.read_moved("general", 4)
    assert known.chats[ChatId("general")].unread == 1
    assert not known.read_moved("general", 3)  # the marker never moves back
    assert known.chats[ChatId("general")].read_seq == 4


def test_chats_are_found_by_label_id_title_or_user() -> None:
    """``general``, ``@bob`` (any case), an id; ``@carol`` before any message is a user."""
    known = model()
    assert known.find_chat("general") == Target(chat=ChatId("general"))
    assert known.find_chat("@bob") == Target(chat=ChatId("d1"))
    assert known.find_chat("d1") == Target(chat=ChatId("d1"))
    assert known.find_chat("@carol") == Target(user="carol")
    assert known.find_chat("nowhere") is None


def test_a_direct_chat_that_appears_becomes_the_current_target() -> None:
    """After the first message to @carol, text goes to the chat it opened."""
    known = model()
    known.current = Target(user="carol")
    known.chat_seen({"id": "d2", "kind": "direct", "title": "carol"})
    assert known.current == Target(chat=ChatId("d2"))


def test_what_is_shown_in_the_current_chat_is_read() -> None:
    """A message shown in the current chat moves the marker; elsewhere it does not."""
    known = model()
    assert known.read_up_to(message("general", 4)) == 4
    assert known.read_up_to(message("d1", 1)) is None


def test_ones_own_message_moves_the_marker_as_the_server_does() -> None:
    """Posting reads the chat on the server: the count follows, and no `read` is asked."""
    known = model()
    known.current = Target(chat=ChatId("d1"))
    own = message("general", 4, author="Alice")
    known.message_seen(own)
    general = known.chats[ChatId("general")]
    assert (general.read_seq, general.unread) == (4, 0)
    assert known.read_up_to(own) is None


def test_joining_a_group_is_news_once_until_it_is_left() -> None:
    """chat.joined and the reply that caused it are one piece of news; leaving resets it."""
    known = model()
    group = {"id": "g1", "kind": "group", "title": "book club", "owner": "carol"}
    assert known.chat_joined(group)
    assert not known.chat_joined(group)
    assert known.find_chat("book_club") == Target(chat=ChatId("g1"))
    known.current = Target(chat=ChatId("g1"))
    assert known.chat_left("g1")
    assert not known.chat_left("g1")
    assert known.current == Target(chat=ChatId("general"))  # not left in a chat one left
    assert known.chat_joined(group)


def test_a_message_with_a_file_is_remembered_for_get() -> None:
    """The file of a message seen is found by the message's id and by its own."""
    known = model()
    file = {"id": "f1", "name": "a.txt", "size": 3, "sha256": "ab"}
    known.message_seen({**message("general", 4), "file": file})
    assert known.file_of("general-4") == file
    assert known.files[FileId("f1")] == file
    assert known.file_of("general-3") is None


def test_a_cancellation_is_news_once() -> None:
    """The reply to /cancel and the scheduled.cancelled event make one line."""
    known = model()
    known.scheduled_seen({"id": "s1", "chat": "general", "text": "later"})
    assert known.scheduled_cancelled("s1")
    assert not known.scheduled_cancelled("s1")
    assert not known.scheduled


@pytest.mark.parametrize(
    ("text", "mentioned"),
    [
        ("hi @alice", True),
        ("@Alice, look", True),
        ("see you, @alice.", True),
        ("@alice2 is someone else", False),
        ("mail a@alice", False),
        ("@alice.smith is too", False),
        ("alice without the at", False),
    ],
)
def test_a_mention_is_at_the_name_and_nothing_longer(text: str, mentioned: bool) -> None:
    """``@alice`` counts, case aside; ``@alice2``, ``a@alice`` and ``@alice.smith`` do not."""
    assert model().mentions_me({**message("general", 4), "text": text}) is mentioned


def test_mentions_and_direct_messages_want_attention_and_count() -> None:
    """A DM or a mention from someone else: highlighted and counted; one's own: not."""
    known = model()
    direct = message("d1", 1)
    assert known.wants_attention(direct)
    assert not known.wants_attention(message("d1", 2, author="ALICE"))
    assert not known.wants_attention(message("general", 4))
    mention = {**message("general", 4), "text": "@alice look"}
    assert known.wants_attention(mention)
    known.message_seen(mention)
    assert known.chats[ChatId("general")].mentions == 1
    known.read_moved("general", 4)
    assert known.chats[ChatId("general")].mentions == 0


def test_ids_in_a_servers_error_read_as_labels() -> None:
    """Chat ids become labels, message ids ``label#seq``; unknown quotes stay."""
    known = model()
    known.message_seen(message("general", 4, id="cc2c77"))
    text = "No message 'cc2c77' in 'd1', and 'zzz' is unknown"
    assert known.readable(text) == "No message general#4 in @Bob, and 'zzz' is unknown"


def test_a_deletion_uncounts_only_a_message_that_was_counted() -> None:
    """A deleted unread message leaves the count; one never seen (its events were not
    resumed) leaves the count as it was."""
    known = model()
    known.message_seen(message("general", 4))
    assert known.chats[ChatId("general")].unread == 2
    known.message_deleted("general", 4, "general-4")
    assert known.chats[ChatId("general")].unread == 1
    assert known.message_at("general", 4) is None
    known.message_deleted("general", 6, "never-seen")
    assert known.chats[ChatId("general")].unread == 1
