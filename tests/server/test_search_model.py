"""The search index against a model of it: after any mix of posts, edits, deletions,
expiries (oldest first, and sometimes behind a longer-lived message) and sweeps,
every query answers what a plain scan of the live messages answers, and the index
keeps nothing for messages gone from its front. Driven directly, with a fixed seed."""

from __future__ import annotations

import random

from server.domain.model import Chat, ChatId, Message, MessageId, UserKey, UserName
from server.domain.search import (
    MENTIONS_MAX,
    QUERY_WORDS_MAX,
    MentionIndex,
    SearchIndex,
    mentioned,
    words,
)

VOCABULARY = [f"w{number}" for number in range(12)]


class Model:
    """The index under test beside the live messages it should find."""

    def __init__(self) -> None:
        self.index = SearchIndex()
        self.live: dict[int, Message] = {}  # by order
        self.posted: list[Message] = []
        self.chats: dict[str, list[Message | None]] = {"small": [], "big": []}

    def post(self, text: str, chat: str) -> Message:
        number = len(self.posted) + 1
        message = Message(
            MessageId(f"m{number}"), ChatId(chat), number, UserName("a"), text, number, None
        )
        self.index.add(message)
        self.live[message.order] = message
        self.posted.append(message)
        self.chats[chat].append(message)
        return message

    def edit(self, message: Message, text: str) -> None:
        old, message.text = message.text, text
        self.index.edit(message, old)

    def gone(self, message: Message, how: str) -> None:
        del self.live[message.order]
        chat = self.chats[message.chat]
        chat[chat.index(message)] = None
        if how == "delete":
            self.index.delete(message)
        else:
            self.index.expired(message)

    def expected(self, query: str, chat: str | None, before: int | None) -> list[str]:
        wanted = words(query)
        if not wanted or len(wanted) > QUERY_WORDS_MAX:
            return []
        return [
            message.id
            for order, message in sorted(self.live.items(), reverse=True)
            if wanted <= words(message.text)
            and (chat is None or message.chat == chat)
            and (before is None or order < before)
        ]

    def check(self, query: str, chat: str | None, before: int | None) -> None:
        within = None if chat is None else self.chats[chat]
        answer = self.index.search(query, lambda m: chat is None or m.chat == chat, before, within)
        assert [m.id for m in answer] == self.expected(query, chat, before), (query, chat, before)


def random_text(rng: random.Random) -> str:
    return " ".join(rng.sample(VOCABULARY, rng.randint(1, 4)))


def random_query(rng: random.Random) -> str:
    return " ".join(rng.sample(VOCABULARY, rng.choice([1, 1, 2, 2, 3])))


def test_every_query_answers_as_a_scan_of_the_live_messages() -> None:
    """Thousands of mixed operations, a query after each few: the index agrees with a
    scan, narrowed to a chat or not, before an order or not."""
    rng = random.Random(20261202)
    model = Model()
    for step in range(3000):
        roll = rng.random()
        live = list(model.live.values())
        if roll < 0.5 or not live:
            model.post(random_text(rng), "small" if rng.random() < 0.04 else "big")
        elif roll < 0.65:
            model.edit(rng.choice(live), random_text(rng))
        elif roll < 0.7:
            model.gone(rng.choice(live), "delete")
        elif roll < 0.95:
            oldest = min(model.live)
            model.gone(model.live[oldest if rng.random() < 0.9 else max(model.live)], "expire")
        else:
            model.index.sweep()
        if step % 7 == 0:
            before = rng.choice([None, rng.randint(1, len(model.posted) + 1)])
            model.check(random_query(rng), rng.choice([None, "small", "big"]), before)
    for query in ["w1", "w2 w3", "w4 w5 w6", "w0 w11"]:
        for chat in (None, "small", "big"):
            model.check(query, chat, None)


def test_more_than_1024_expired_at_the_front_are_trimmed_and_found_right() -> None:
    """2,000 messages expired oldest first are trimmed from the index's front in
    batches; the ones left are found, and a sweep keeps no posting of the expired."""
    model = Model()
    for number in range(2100):
        model.post(f"common w{number % 3}", "big")
    for message in model.posted[:2000]:
        model.gone(message, "expire")
    model.check("common", None, None)
    model.check("common w1", None, None)
    model.index.sweep()
    assert len(model.index.postings["common"]) == 100
    assert len(model.index.messages) <= 100 + 1024
    model.check("common w2", "big", 2050)


def test_an_expired_message_behind_a_longer_lived_one_stays_out_of_answers() -> None:
    """A message that expires while an older one lives is skipped; once the older one
    goes too, both leave the index's front."""
    model = Model()
    first, second, third = (model.post("common", "big") for _ in range(3))
    model.gone(second, "expire")
    model.check("common", None, None)
    model.gone(first, "expire")
    model.index.sweep()
    assert list(model.index.postings["common"]) == [third.order]
    model.check("common", None, None)


def test_an_edit_adds_a_word_in_its_place_among_newer_messages() -> None:
    """An older message edited to a word newer ones hold is found in order among them."""
    model = Model()
    older = model.post("alpha", "big")
    model.post("beta", "big")
    model.post("beta", "big")
    model.edit(older, "beta")
    model.check("beta", None, None)
    assert list(model.index.postings["beta"]) == [1, 2, 3]
    assert "alpha" not in model.index.postings


def test_a_word_no_message_holds_any_more_keeps_no_postings() -> None:
    """Deleting or editing away a word's last message forgets the word."""
    model = Model()
    lonely = model.post("lonely shared", "big")
    other = model.post("shared", "big")
    model.gone(lonely, "delete")
    assert set(model.index.postings) == {"shared"}
    model.edit(other, "renamed")
    assert set(model.index.postings) == {"renamed"}


def test_a_query_of_no_word_or_too_many_words_finds_nothing() -> None:
    """A query with no word finds nothing; 16 words are searched, 17 are refused."""
    model = Model()
    sixteen = " ".join(f"q{number}" for number in range(16))
    model.post(sixteen + " q16", "big")
    model.check("", None, None)
    model.check("!!", None, None)
    assert [m.id for m in model.index.search(sixteen, lambda m: True)] == ["m1"]
    assert list(model.index.search(sixteen + " q16", lambda m: True)) == []


def test_a_chat_as_long_as_the_word_list_is_walked_either_way_alike() -> None:
    """A chat exactly as long as the rarest word's postings, and one of a single
    message, give the same answers as the postings would."""
    model = Model()
    for number in range(4):
        model.post("common" if number % 2 else "common rare", "small")
    model.check("rare", "small", None)
    model.check("common rare", "small", None)
    model.check("rare", "small", 3)


def test_at_most_50_users_are_mentioned_in_one_text() -> None:
    """Mentions stop at the 50th distinct user; the 51st is not told."""
    names = [f"user{number}" for number in range(MENTIONS_MAX + 1)]
    found = mentioned(" ".join(f"@{name}" for name in names), UserName)
    assert found == names[:50]
    assert MENTIONS_MAX == 50


def test_mentions_are_counted_once_each_in_seq_order_and_forgotten_when_expired() -> None:
    """A mention added by an edit of an older message goes in its place, one added
    twice counts once; unread counts live mentions after the read marker, and forgets
    those expired off the chat's front."""
    index = MentionIndex()
    bob = UserKey("bob")
    for seq in (2, 5, 7, 5, 3, 7, 1):
        index.add("c", bob, seq)
    assert index.seqs[("c", bob)] == [1, 2, 3, 5, 7]
    everything_live = lambda seq: True  # noqa: E731
    assert index.unread("c", bob, 0, 1, everything_live) == 5
    assert index.unread("c", bob, 2, 1, everything_live) == 3
    assert index.unread("c", bob, 3, 1, lambda seq: seq != 5) == 1
    index.remove("c", bob, 4)  # never mentioned: nothing changes
    index.remove("c", bob, 5)
    assert index.seqs[("c", bob)] == [1, 2, 3, 7]
    assert index.unread("c", bob, 0, 3, everything_live) == 2
    assert index.seqs[("c", bob)] == [3, 7]
    assert index.unread("c", bob, 0, 8, everything_live) == 0
    assert index.seqs == {}
    index.add("c", bob, 9)
    index.remove("c", bob, 10)  # past the last: nothing changes
    index.remove("c", UserKey("nobody"), 9)
    index.remove("c", bob, 9)
    assert index.seqs == {}
    assert index.unread("c", UserKey("nobody"), 0, 1, everything_live) == 0


def test_building_a_built_index_changes_nothing() -> None:
    """build() on an index that was never deferred says it is built and indexes nothing
    twice: every message is still found once."""
    model = Model()
    for _ in range(3):
        model.post("common", "big")
    assert model.index.build(10) is True
    model.check("common", None, None)


def test_a_chat_has_no_message_past_its_last_seq() -> None:
    """message_at answers None for a seq before the first or after the last."""
    model = Model()
    model.post("one", "big")
    chat = Chat(ChatId("big"), "group", "t", None, messages=list(model.chats["big"]))
    assert chat.message_at(1) is model.posted[0]
    assert (chat.message_at(0), chat.message_at(2)) == (None, None)


def test_a_message_posted_after_the_front_was_trimmed_whole_stays_found() -> None:
    """Once every message expired (the front trimmed to nothing), a message posted next
    is found while a newer one expires behind it."""
    model = Model()
    for message in [model.post("old", "big") for _ in range(3)]:
        model.gone(message, "expire")
    kept = model.post("kept", "big")
    newer = model.post("newer", "big")
    model.gone(newer, "expire")
    model.check("kept", None, None)
    assert [m.id for m in model.index.search("kept", lambda m: True)] == [kept.id]


def test_the_postings_of_100_001_expired_messages_are_swept_by_the_last_expiry() -> None:
    """Expired postings stay until the expired outnumber both the live and 100,000:
    the 100,001st expiry sweeps them all, the 100,000th none."""
    index = SearchIndex()
    posted = [
        Message(MessageId(""), ChatId("c"), n, UserName("a"), "common", n, None)
        for n in range(100_002)
    ]
    for message in posted:
        index.add(message)
    for message in posted[:100_000]:
        index.expired(message)
    assert len(index.postings["common"]) == 100_002
    index.expired(posted[100_000])
    assert list(index.postings["common"]) == [posted[-1].order]
