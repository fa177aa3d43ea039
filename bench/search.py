"""Search benchmark: the inverted index at 1,000,000 live messages.

Folds ``--messages`` MessagePosted events (texts drawn from a Zipf-like vocabulary,
so that some words are very common) into a ``State`` twice: once with the real
search index and once with an index that only numbers the messages, to give the
cost the index adds to every posting and to a replay (a replay is the same fold).
Then times ``SearchIndex.search`` as the ``search`` method calls it (every chat of
one user visible, 21 results asked for, to say ``has_more``): one common word, three
common words, and one common word narrowed to a small direct chat. Prints figures;
asserts nothing. Each query's CPU time (``thread_time``) is printed beside its wall
time: on a shared machine the wall time's tail is the scheduler's, not the index's.

    nice .venv/bin/python bench/search.py                  # 1M messages
    nice .venv/bin/python bench/search.py --messages 100000
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import sys
import time
from array import array

from server.domain.events import DirectChatOpened, Event, MessagePosted, UserRegistered
from server.domain.model import GENERAL, Chat, ChatId, Message, MessageId, UserName
from server.domain.search import SearchIndex
from server.domain.state import State

START_MS = 1_700_000_000_000


class NumberingOnly(SearchIndex):
    """What the state needs of the index without indexing: each message's order."""

    def add(self, message: Message) -> None:
        message.order = self.next_order
        self.messages.append(message)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--direct-chats", type=int, default=400)
    parser.add_argument("--direct-share", type=float, default=0.15)
    parser.add_argument("--vocabulary", type=int, default=30_000)
    parser.add_argument("--queries", type=int, default=2000, help="per kind of query")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args()


def events(args: argparse.Namespace) -> tuple[list[Event], list[MessagePosted]]:
    rng = random.Random(args.seed)
    vocabulary = [f"w{rank}" for rank in range(args.vocabulary)]
    weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(args.vocabulary)))
    users = [UserName(f"user{i:04d}") for i in range(args.users)]
    setup: list[Event] = [UserRegistered(user, "x", START_MS) for user in users]
    directs = []
    for index in range(args.direct_chats):
        a, b = rng.sample(users, 2)
        opened = DirectChatOpened(ChatId(f"d{index}"), a, b, START_MS)
        directs.append(opened)
        setup.append(opened)
    seqs: dict[ChatId, int] = {}
    posted = []
    for number in range(args.messages):
        if rng.random() < args.direct_share:
            opened = rng.choice(directs)
            chat, author = opened.chat, rng.choice((opened.user_a, opened.user_b))
        else:
            chat, author = GENERAL, rng.choice(users)
        seqs[chat] = seqs.get(chat, 0) + 1
        text = " ".join(rng.choices(vocabulary, cum_weights=weights, k=rng.randint(4, 20)))
        at = START_MS + number
        posted.append(
            MessagePosted(MessageId(f"m{number}"), chat, seqs[chat], author, text, at, None)
        )
    return setup, posted


def fold(
    setup: list[Event], posted: list[MessagePosted], index: SearchIndex
) -> tuple[State, float]:
    state = State()
    state.search = index
    for event in setup:
        state.apply(event)
    gc.disable()
    began = time.thread_time()  # CPU time: the machine may be shared
    apply = state.apply
    for event in posted:
        apply(event)
    took = time.thread_time() - began
    gc.enable()
    return state, took


def index_bytes(index: SearchIndex) -> int:
    """The index's own memory: arrays, the dict, the word strings, the order list."""
    total = sys.getsizeof(index.postings) + sys.getsizeof(index.messages)
    for word, posted in index.postings.items():
        total += sys.getsizeof(word) + sys.getsizeof(posted)
    return total


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)

    def pick(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return (
        f"p50 {pick(0.5) * 1000:6.2f} ms  p99 {pick(0.99) * 1000:6.2f} ms  "
        f"max {ordered[-1] * 1000:6.2f} ms"
    )


def main() -> None:
    args = parse_args()
    began = time.perf_counter()
    setup, posted = events(args)
    print(f"generated {len(posted):,} messages in {time.perf_counter() - began:.1f} s")
    n = len(posted)
    _, plain = fold(setup, posted, NumberingOnly())
    gc.collect()
    _, live = fold(setup, posted, SearchIndex())
    gc.collect()
    deferred_index = SearchIndex()
    deferred_index.defer()
    state, deferred = fold(setup, posted, deferred_index)
    began = time.thread_time()
    slices = 1
    while not deferred_index.build(2000):
        slices += 1
    built = time.thread_time() - began
    print(f"CPU time to fold {n:,} MessagePosted (a replay's fold, or live posting):")
    print(f"  no index at all        {plain:6.2f} s")
    print(
        f"  index kept live        {live:6.2f} s: posting costs "
        f"+{(live - plain) / n * 1e6:.2f} us a message"
    )
    print(
        f"  deferred (at a start)  {deferred:6.2f} s: the replay costs "
        f"+{(deferred - plain) / n * 1e6:.2f} us a message; then built in {slices} slices "
        f"of 2000 in {built:.2f} s ({built / slices * 1000:.1f} ms each, the loop free between)"
    )
    index = state.search
    postings = sum(len(p) for p in index.postings.values())
    size = index_bytes(index)
    print(
        f"index: {len(index.postings):,} words, {postings:,} postings "
        f"({postings / n:.1f} per message); {size / 2**20:.0f} MiB = {size / n:.0f} bytes "
        f"per message ({array('q').itemsize} bytes a posting)"
    )
    user = state.users[next(iter(state.users))]
    mine = user.chats

    def visible(message: Message) -> bool:
        return message.chat in mine

    common = sorted(index.postings, key=lambda word: -len(index.postings[word]))[:30]
    rng = random.Random(args.seed + 1)
    small_chat = next(state.chats[c] for c in mine if c != GENERAL)

    def one_common() -> tuple[str, Chat | None]:
        return rng.choice(common[:10]), None

    def three_common() -> tuple[str, Chat | None]:
        return " ".join(rng.sample(common[:10], 3)), None

    def three_of_30() -> tuple[str, Chat | None]:
        return " ".join(rng.sample(common, 3)), None

    def one_common_direct() -> tuple[str, Chat | None]:
        return rng.choice(common[:10]), small_chat

    kinds = {
        "one of the 10 commonest words": one_common,
        "three of the 10 commonest": three_common,
        "three of the 30 commonest": three_of_30,
        "one common word, one direct chat": one_common_direct,
    }
    for name, make in kinds.items():
        samples, cpu = [], []
        found = 0
        for _ in range(args.queries):
            query, chat = make()
            within: list[Message | None] | None = None
            check = visible
            if chat is not None:
                within, only = chat.messages, chat.id

                def check(message: Message, only: str = only) -> bool:
                    return message.chat == only

            began, began_cpu = time.perf_counter(), time.thread_time()
            results = list(itertools.islice(index.search(query, check, None, within), 21))
            samples.append(time.perf_counter() - began)
            cpu.append(time.thread_time() - began_cpu)
            found += len(results)
        print(f"{name:34s} wall {percentiles(samples)}  ({found / args.queries:.1f} results each)")
        print(f"{'':34s} CPU  {percentiles(cpu)}")
    print(f"(the most common word is in {len(index.postings[common[0]]):,} messages)")


if __name__ == "__main__":
    main()
