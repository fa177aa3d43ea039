"""Words and names in message texts: the search index and the mentions.

The index maps each word (Unicode case-folded, ``\\w+``) to the ``order`` numbers
of the live messages containing it, ascending (``array('q')``: 8 bytes a posting,
where a list of ints would cost 8 plus a 32-byte int each). ``order`` is given by
the fold in posting order, and a snapshot lists messages in that order, so a
rebuilt index needs no sort. A query walks the rarest word's postings from the
newest down and checks the other words by binary search: it reads about
``limit`` times the inverse of the other words' co-occurrence, never every message.

Expired messages leave their postings behind (expiry must stay O(1) per message);
``messages`` then holds None for them, a query skips them, and once the expired
outnumber the live a sweep cuts the arrays' dead fronts (amortised O(1)).
Edited and deleted messages are taken out at once.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from server.domain.model import Message, UserKey, UserName

WORD: Final = re.compile(r"\w+")
MENTION: Final = re.compile(r"(?<![\w@])@([A-Za-z0-9_.\-]{1,32})")
QUERY_WORDS_MAX: Final = 16
MENTIONS_MAX: Final = 50


def words(text: str) -> set[str]:
    """The distinct words of ``text``, case-folded (``Straße`` finds ``STRASSE``)."""
    return set(WORD.findall(text.casefold()))


def mentioned(text: str, known: Callable[[str], UserName | None]) -> list[UserName]:
    """The users ``@name`` in ``text`` names, as registered, in order, once each;
    ``known`` says whether a name is a user who may be mentioned (sees the chat).
    A name's trailing dots and dashes are punctuation unless the name has them."""
    found: list[UserName] = []
    for match in MENTION.finditer(text):
        name = match[1]
        user = known(name)
        while user is None and name and name[-1] in ".-":
            name = name[:-1]
            user = known(name) if name else None
        if user is not None and user not in found:
            found.append(user)
            if len(found) == MENTIONS_MAX:
                break
    return found


class SearchIndex:
    def __init__(self) -> None:
        self.postings: dict[str, array[int]] = {}
        self.messages: list[Message | None] = []  # messages[o - base] has order o
        self.base = 1
        self.holes = 0  # None slots in ``messages`` (expired or deleted)
        self.leading = 0  # of them, how many lead (not trimmed yet)
        self.dead = 0  # expired messages whose postings are still in the arrays
        # Built in the background after a start (see ``defer``): until ``built``,
        # only orders below ``frontier`` are in ``postings``.
        self.built = True
        self.frontier = 0

    @property
    def next_order(self) -> int:
        return self.base + len(self.messages)

    def defer(self) -> None:
        """Number the messages folded from now on, but index none: a start's replay
        stays as fast as without an index (tokenising is 3-5 times the rest of the
        fold of a message); ``build`` indexes them afterwards, in slices."""
        self.built = False
        self.frontier = self.base

    def build(self, count: int) -> bool:
        """Index up to ``count`` more of the messages a deferred replay left (and those
        posted since, which are left to it too); True once every message is indexed
        and searching may start. It catches up: it indexes far faster than anyone posts."""
        if self.built:
            return True
        self.frontier = max(self.frontier, self.base)
        end = min(self.frontier + count, self.next_order)
        messages, base, postings = self.messages, self.base, self.postings
        for order in range(self.frontier, end):
            message = messages[order - base]
            if message is not None:
                self._post_into(postings, order, words(message.text))
        self.frontier = end
        self.built = end >= self.next_order
        return self.built

    def _tier(self, order: int) -> dict[str, array[int]] | None:
        """Where ``order``'s postings go; None while the build has not reached it (it
        will read the message's text as it is then)."""
        return self.postings if self.built or order < self.frontier else None

    def add(self, message: Message) -> None:
        """A new message, newest of all: its order is the next one."""
        messages = self.messages
        message.order = order = self.base + len(messages)  # next_order, inlined (replay)
        messages.append(message)
        if self.built:
            self._post_into(self.postings, order, words(message.text))

    def add_all(self, messages: list[Message]) -> None:
        """``add`` of each of ``messages``, in order (a snapshot's, loaded in slices)."""
        if self.built:
            for message in messages:
                self.add(message)
            return
        order = self.next_order
        for message in messages:
            message.order = order
            order += 1
        self.messages += messages

    def _post(self, order: int, found: set[str]) -> None:
        postings = self._tier(order)
        if postings is not None:
            self._post_into(postings, order, found)

    @staticmethod
    def _post_into(postings: dict[str, array[int]], order: int, found: set[str]) -> None:
        for word in found:
            posted = postings.get(word)
            if posted is None:
                postings[word] = array("q", (order,))
            elif posted[-1] < order:
                posted.append(order)
            else:  # an edit's new word: into its place
                posted.insert(bisect_left(posted, order), order)

    def _unpost(self, order: int, gone: set[str]) -> None:
        postings = self._tier(order)
        if postings is None:
            return
        for word in gone:
            posted = postings.get(word)
            if posted is None:
                continue
            index = bisect_left(posted, order)
            if index < len(posted) and posted[index] == order:
                del posted[index]
                if not posted:
                    del postings[word]

    def edit(self, message: Message, old_text: str) -> None:
        before, after = words(old_text), words(message.text)
        self._unpost(message.order, before - after)
        self._post(message.order, after - before)

    def delete(self, message: Message) -> None:
        self._unpost(message.order, words(message.text))
        self._slot_cleared(message)

    def expired(self, message: Message) -> None:
        """Its postings stay until the sweep (they are skipped meanwhile): expiry costs
        no tokenising. The sweep comes once the expired outnumber the live."""
        self.dead += 1
        self._slot_cleared(message)
        if self.built and self.dead > max(len(self.messages) - self.holes, 100_000):
            self.sweep()

    def _slot_cleared(self, message: Message) -> None:
        messages = self.messages
        index = message.order - self.base
        if 0 <= index < len(messages):
            messages[index] = None
            self.holes += 1
        leading = self.leading  # counted on from where the last call stopped: O(1) amortised
        while leading < len(messages) and messages[leading] is None:
            leading += 1
        if leading > 1024 or leading == len(messages):  # trimmed in batches
            del messages[:leading]
            self.base += leading
            self.holes -= leading
            leading = 0
        self.leading = leading

    def sweep(self) -> None:
        """Drop the postings of the messages expired from the front (expiry takes the
        oldest first): a slice off each array's front, at C speed. A message that
        expired behind a longer-lived one (the ttl changed between runs) keeps its
        postings (skipped by queries) until the front passes it."""
        front = self.base + self.leading
        for word in list(self.postings):
            posted = self.postings[word]
            cut = bisect_left(posted, front)
            if cut == len(posted):
                del self.postings[word]
            elif cut:
                del posted[:cut]
        self.dead = 0

    def search(
        self,
        query: str,
        visible: Callable[[Message], bool],
        before: int | None = None,
        within: Sequence[Message | None] | None = None,
    ) -> Iterator[Message]:
        """Live messages containing every word of ``query`` that ``visible`` lets
        through, newest first, older than order ``before`` when given. ``within`` (one
        chat's messages, by seq) is walked instead of the rarest word's postings when
        it is shorter: a common word asked of a small chat reads the chat, not the word."""
        assert self.built, "search only once build() says so"
        wanted = words(query)
        if not wanted or len(wanted) > QUERY_WORDS_MAX:
            return
        lists = []
        for word in wanted:
            posted = self.postings.get(word)
            if posted is None:
                return
            lists.append(posted)
        lists.sort(key=len)
        if within is not None and len(within) < len(lists[0]):
            for message in reversed(within):
                if message is None or (before is not None and message.order >= before):
                    continue
                if visible(message) and all(_holds(posted, message.order) for posted in lists):
                    yield message
            return
        rarest, others = lists[0], lists[1:]
        # Each other word's search ends where its last one began: orders only go down.
        bounds = [len(posted) for posted in others]
        pairs = list(zip(others, range(len(others)), strict=True))
        messages, base = self.messages, self.base
        end = len(rarest) if before is None else bisect_left(rarest, before)
        for index in range(end - 1, -1, -1):
            order = rarest[index]
            if order < base:
                return  # older than every live message
            for posted, k in pairs:
                at = bisect_left(posted, order, 0, bounds[k])
                bounds[k] = at + 1 if at < len(posted) else at
                if at == len(posted) or posted[at] != order:
                    break
            else:
                message = messages[order - base]
                if message is not None and visible(message):
                    yield message


def _holds(posted: array[int], order: int) -> bool:
    index = bisect_left(posted, order)
    return index < len(posted) and posted[index] == order


class MentionIndex:
    """Per chat and user, the seqs of the messages that mention them, ascending."""

    def __init__(self) -> None:
        self.seqs: dict[tuple[str, UserKey], list[int]] = {}

    def add(self, chat: str, key: UserKey, seq: int) -> None:
        seqs = self.seqs.setdefault((chat, key), [])
        if not seqs or seqs[-1] < seq:
            seqs.append(seq)
        else:
            index = bisect_left(seqs, seq)
            if index == len(seqs) or seqs[index] != seq:
                seqs.insert(index, seq)

    def remove(self, chat: str, key: UserKey, seq: int) -> None:
        seqs = self.seqs.get((chat, key))
        if not seqs:
            return
        index = bisect_left(seqs, seq)
        if index < len(seqs) and seqs[index] == seq:
            del seqs[index]
        if not seqs:
            del self.seqs[(chat, key)]

    def unread(
        self, chat: str, key: UserKey, read_seq: int, first_seq: int, live: Callable[[int], bool]
    ) -> int:
        """How many live messages after ``read_seq`` mention ``key``; the seqs of
        messages expired from the chat's front are forgotten on the way."""
        seqs = self.seqs.get((chat, key))
        if not seqs:
            return 0
        if seqs[0] < first_seq:
            del seqs[: bisect_left(seqs, first_seq)]
            if not seqs:
                del self.seqs[(chat, key)]
                return 0
        return sum(1 for seq in seqs[bisect_left(seqs, read_seq + 1) :] if live(seq))
