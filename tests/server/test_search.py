"""The search index and mention parsing, driven directly (no server)."""

from __future__ import annotations

from server.domain.model import ChatId, Message, MessageId, UserName
from server.domain.search import SearchIndex, mentioned, words


def message(number: int, text: str, chat: str = "general") -> Message:
    return Message(
        MessageId(f"m{number}"), ChatId(chat), number, UserName("alice"), text, number, None
    )


def found(index: SearchIndex, query: str, before: int | None = None) -> list[str]:
    return [m.id for m in index.search(query, lambda m: m.chat == "general", before)]


def test_words_fold_case_the_unicode_way() -> None:
    """Words are runs of letters and digits, case-folded (ß is ss)."""
    assert words("Die STRASSE, die Straße! x_1") == {"die", "strasse", "x_1"}


def test_every_word_must_be_present_newest_first() -> None:
    """A query finds messages holding all its words, newest first, before an order."""
    index = SearchIndex()
    posted = [message(n, text) for n, text in enumerate(["a b", "b c", "a b c", "c"], 1)]
    for each in posted:
        index.add(each)
    assert found(index, "B a") == ["m3", "m1"]
    assert found(index, "c", before=posted[2].order) == ["m2"]
    assert found(index, "zzz") == []
    assert [m.id for m in index.search("c", lambda m: False)] == []


def test_edits_and_deletions_are_reindexed_and_expired_ones_swept() -> None:
    """An edit moves a message between words; a deletion drops it; expired postings
    are skipped, and swept off the front."""
    index = SearchIndex()
    posted = [message(n, "old common") for n in range(1, 5)]
    for each in posted:
        index.add(each)
    old = posted[0].text
    posted[0].text = "new common"
    index.edit(posted[0], old)
    assert found(index, "new") == ["m1"]
    assert found(index, "old") == ["m4", "m3", "m2"]
    index.delete(posted[1])
    index.expired(posted[2])  # behind a live one: skipped, kept until the front passes
    assert found(index, "common") == ["m4", "m1"]
    index.sweep()
    assert list(index.postings["common"]) == [1, 3, 4]
    index.expired(posted[0])  # now the front has passed m1, m2 and m3
    index.sweep()
    assert list(index.postings["common"]) == [4]
    assert "new" not in index.postings
    assert found(index, "common") == ["m4"]


def test_mentions_are_known_names_once_each() -> None:
    """@name of a known user, any case, trailing punctuation dropped, e-mails ignored."""
    users = {"bob": UserName("Bob"), "j.doe": UserName("j.doe")}
    names = mentioned(
        "hi @BOB. and @j.doe, @bob again, a@bob.com, @nobody", lambda n: users.get(n.lower())
    )
    assert names == ["Bob", "j.doe"]


def test_a_small_chat_is_read_instead_of_a_long_word_list() -> None:
    """Narrowed to a chat shorter than the word's postings, the chat's messages are
    walked, with the same answer: newest first, every word, before an order."""
    index = SearchIndex()
    small = [message(n, "common rare" if n % 2 else "common", "small") for n in (1, 3, 5)]
    for n in range(1, 7):
        index.add(small[n // 2] if n % 2 else message(n, "common"))
    found_in = [
        m.id for m in index.search("common", lambda m: m.chat == "small", small[2].order, small)
    ]
    assert found_in == ["m3", "m1"]
    assert [m.id for m in index.search("rare common", lambda m: True, None, small)] == [
        "m5",
        "m3",
        "m1",
    ]


def test_a_deferred_index_is_built_in_slices_and_misses_no_edit() -> None:
    """After a start's replay the index is built in slices; edits meanwhile, on either
    side of the build's frontier, and messages posted meanwhile are all found right."""
    index = SearchIndex()
    index.defer()
    posted = [message(n, f"word{n} common") for n in range(1, 7)]
    for each in posted[:4]:
        index.add(each)
    assert index.build(2) is False  # m1, m2 indexed
    for each, text in ((posted[0], "first changed"), (posted[2], "third changed")):
        old, each.text = each.text, text
        index.edit(each, old)
    index.add(posted[4])
    index.delete(posted[3])
    assert index.build(2) is False
    index.add(posted[5])
    assert index.build(100) is True
    assert found(index, "changed") == ["m3", "m1"]
    assert found(index, "common") == ["m6", "m5", "m2"]
    assert found(index, "word4") == []
