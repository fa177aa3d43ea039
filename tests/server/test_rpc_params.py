"""server/rpc.py driven directly, without a server: a method declared by its handler's
signature validates params at their exact bounds, says what it expected in its errors,
and describes the same bounds in its OpenRPC schema; the envelope's limits (containers
in a frame, requests in a batch) hold exactly at their numbers."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

import orjson
import pytest

from server.errors import InvalidParams
from server.rpc import (
    MAX_BATCH,
    MAX_CONTAINERS,
    Dispatcher,
    Doc,
    Length,
    Pattern,
    Range,
    Registry,
    quote,
    rpc_method,
)
from server.store import StoreFailed

WORD = Pattern(re.compile(r"[a-z]+"), "a lower-case word")


class Toy:
    """Handlers of every kind of param, for the registry."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.steps: list[str] = []

    @rpc_method("toy.params")
    async def params(
        self,
        session: Any,
        *,
        name: Annotated[str, Length(2, 4), WORD, Doc("a short word")],
        ratio: Annotated[float, Range(min=0, max=10)] = 1.0,
        count: Annotated[int | None, Range(min=1)] = None,
        ceiling: Annotated[int, Range(max=5)] | None = None,
        tags: Annotated[list[Any], Length(1, 2)] | None = None,
        flag: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Take every kind of param.

        More text that is not the summary."""
        bound = {"name": name, "ratio": ratio, "count": count, "ceiling": ceiling}
        bound |= {"tags": tags, "flag": flag, "extra": extra}
        self.calls.append(("toy.params", bound))
        return {"ok": True}

    @rpc_method("toy.either", exclusive=(("left", "right"),))
    async def either(
        self, session: Any, *, left: int | None = None, right: int | None = None
    ) -> dict[str, Any]:
        return {"left": left, "right": right}

    @rpc_method("toy.step")
    async def step(self, session: Any, *, label: str) -> dict[str, Any]:
        """A read: it yields to the loop once between its start and its end."""
        self.steps.append(f"{label}+")
        await asyncio.sleep(0)
        self.steps.append(f"{label}-")
        return {}

    @rpc_method("toy.session", ordered=True)
    async def session(self, session: Any, *, label: str) -> dict[str, Any]:
        """Changes the session: the requests after it in a batch wait for it."""
        return await self.step(session, label=label)

    @rpc_method("toy.open", anonymous=True)
    async def open(self, session: Any) -> dict[str, Any]:
        return {"open": True}

    @rpc_method("toy.fail")
    async def fail(self, session: Any, *, store: bool = False) -> dict[str, Any]:
        raise StoreFailed("disk full") if store else RuntimeError("a bug")


def registry(toy: Toy | None = None) -> Registry:
    return Registry(toy or Toy(), title="toy", version="1")


def bind(**params: Any) -> dict[str, Any]:
    return registry().methods["toy.params"].bind(params)


def invalid(method: str = "toy.params", **params: Any) -> str:
    with pytest.raises(InvalidParams) as error:
        registry().methods[method].bind(params)
    return error.value.message


def test_numbers_are_numbers_and_booleans_are_not() -> None:
    """A float param takes ints and floats, an int param ints; neither takes a boolean
    (JSON true is not 1), and the error names the JSON types."""
    assert bind(name="ab", ratio=2)["ratio"] == 2
    assert bind(name="ab", ratio=2.5)["ratio"] == 2.5
    assert invalid(name="ab", ratio=True) == "Expected 'ratio' to be number, but got boolean"
    assert invalid(name="ab", ratio="2") == "Expected 'ratio' to be number, but got string"
    assert invalid(name="ab", count=True) == "Expected 'count' to be integer, but got boolean"
    assert invalid(name="ab", count=1.5) == "Expected 'count' to be integer, but got number"
    assert invalid(name="ab", flag=1) == "Expected 'flag' to be boolean, but got integer"
    assert invalid(name="ab", extra=[]) == "Expected 'extra' to be object, but got array"
    assert bind(name="ab", flag=True, extra={})["flag"] is True


def test_lengths_hold_at_both_ends_in_characters_and_items() -> None:
    """Length(2, 4) takes 2 and 4 characters, not 1 or 5; a list counts items."""
    assert bind(name="ab")["name"] == "ab"
    assert bind(name="abcd")["name"] == "abcd"
    assert invalid(name="a") == "Expected 'name' of 2 to 4 characters, but got 1"
    assert invalid(name="abcde") == "Expected 'name' of 2 to 4 characters, but got 5"
    assert bind(name="ab", tags=[1, 2])["tags"] == [1, 2]
    assert invalid(name="ab", tags=[]) == "Expected 'tags' of 1 to 2 items, but got 0"


def test_ranges_say_their_bounds() -> None:
    """Range(min=0, max=10) says "from 0 to 10", Range(min=1) "at least 1",
    Range(max=5) "at most 5"; the bounds themselves are taken."""
    assert bind(name="ab", ratio=0, count=1, ceiling=5)["ceiling"] == 5
    assert bind(name="ab", ratio=10)["ratio"] == 10
    assert invalid(name="ab", ratio=-0.5) == "Expected 'ratio' from 0 to 10, but got -0.5"
    assert invalid(name="ab", ratio=10.5) == "Expected 'ratio' from 0 to 10, but got 10.5"
    assert invalid(name="ab", count=0) == "Expected 'count' at least 1, but got 0"
    assert invalid(name="ab", ceiling=6) == "Expected 'ceiling' at most 5, but got 6"


def test_a_pattern_must_match_the_whole_value() -> None:
    """A pattern is matched in full, and the error names what was wanted."""
    assert invalid(name="ab1") == "Expected 'name' to be a lower-case word, but got 'ab1'"
    assert invalid(name="Abc") == "Expected 'name' to be a lower-case word, but got 'Abc'"


def test_params_are_checked_by_name_and_null_is_absent() -> None:
    """A missing required param and unknown ones are refused (at most three named, the
    rest counted); null stands for an absent optional param."""
    assert invalid() == "Expected param 'name', but it is missing"
    assert invalid(name=None) == "Expected param 'name', but it is missing"
    assert bind(name="ab", count=None) == {"name": "ab"}
    known = "['ceiling', 'count', 'extra', 'flag', 'name', 'ratio', 'tags']"
    assert invalid(name="ab", a=1, b=2, c=3) == (
        f"Expected params among {known}, but got unexpected ['a', 'b', 'c']"
    )
    assert invalid(name="ab", a=1, b=2, c=3, d=4, e=5) == (
        f"Expected params among {known}, but got unexpected ['a', 'b', 'c'] and 2 more"
    )
    assert invalid(name="ab", a=1, b=2, c=3, d=4).endswith("['a', 'b', 'c'] and 1 more")


def test_exactly_one_of_an_exclusive_group() -> None:
    """Of (left, right), one must be given: none and both are refused alike."""
    method = registry().methods["toy.either"]
    assert method.bind({"left": 1}) == {"left": 1}
    assert method.bind({"right": 2, "left": None}) == {"right": 2}
    assert invalid("toy.either") == "Expected exactly one of ['left', 'right'], but got none"
    assert invalid("toy.either", left=1, right=2) == (
        "Expected exactly one of ['left', 'right'], but got ['left', 'right']"
    )


def test_quote_shows_at_most_32_characters_of_a_string() -> None:
    """An error quotes a string of 32 characters whole, a longer one by its first 32
    and its length, anything else by its JSON type."""
    assert quote("x" * 32) == repr("x" * 32)
    assert quote("y" * 33) == f"{'y' * 32!r}... (33 characters)"
    values: list[Any] = [None, True, 1, 1.5, {}, []]
    assert [quote(value) for value in values] == [
        "null",
        "boolean",
        "integer",
        "number",
        "object",
        "array",
    ]


def test_the_openrpc_document_describes_the_same_bounds() -> None:
    """Each param's schema carries its type, length (minItems for a list), range and
    full-match pattern; the summary is the docstring's first paragraph; methods are
    sorted by name."""
    document = registry().openrpc()
    assert document["openrpc"] == "1.3.2"
    assert document["info"] == {"title": "toy", "version": "1"}
    assert [method["name"] for method in document["methods"]] == sorted(
        ["toy.params", "toy.either", "toy.open", "toy.fail", "toy.step", "toy.session"]
    )
    params = next(m for m in document["methods"] if m["name"] == "toy.params")
    assert params["summary"] == "Take every kind of param."
    assert params["paramStructure"] == "by-name"
    schemas = {param["name"]: param["schema"] for param in params["params"]}
    assert schemas == {
        "name": {"type": "string", "minLength": 2, "maxLength": 4, "pattern": "^(?:[a-z]+)$"},
        "ratio": {"type": "number", "minimum": 0, "maximum": 10},
        "count": {"type": "integer", "minimum": 1},
        "ceiling": {"type": "integer", "maximum": 5},
        "tags": {"type": "array", "minItems": 1, "maxItems": 2},
        "flag": {"type": "boolean"},
        "extra": {"type": "object"},
    }
    described = {param["name"]: param for param in params["params"]}
    assert described["name"]["required"] is True
    assert described["name"]["description"] == "a short word"
    assert described["ratio"]["required"] is False
    assert described["ratio"]["description"] == ""


# -- the envelope ----------------------------------------------------------------------


def dispatcher(logged_in: bool = True, reply_limit: int = 2**20) -> Dispatcher:
    return Dispatcher(registry(), lambda session: logged_in, reply_limit=reply_limit)


def call(method: str, request_id: Any = 1, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}


async def answer(frame: Any, logged_in: bool = True) -> Any:
    rpc = dispatcher(logged_in)
    text = frame if isinstance(frame, str) else orjson.dumps(frame).decode()
    reply = await rpc.handle(None, rpc.parse(text))
    return None if reply is None else orjson.loads(reply)


def nested_frame(containers: int, text: str = "") -> str:
    """A batch of one request whose params hold ``containers`` arrays and objects in all,
    and ``text`` as a string among them."""
    filler = ",".join(["[]"] * (containers - 3) + [orjson.dumps(text).decode()])
    return f'[{{"jsonrpc":"2.0","method":"toy.open","params":{{"x":[{filler}]}},"id":1}}]'


async def test_a_frame_of_exactly_max_containers_is_parsed() -> None:
    """4096 arrays and objects in a frame are parsed (here: refused as params, which
    needs parsing), 4097 are refused unparsed; brackets inside strings do not count."""
    assert MAX_CONTAINERS == 4096
    at_limit = await answer(nested_frame(4095))  # x's list is one more
    assert at_limit[0]["error"]["code"] == -32602
    with_text = await answer(nested_frame(4095, text="[{[{"))
    assert with_text[0]["error"]["code"] == -32602
    over = await answer(nested_frame(4096))
    assert over["error"] == {
        "code": -32600,
        "message": "Expected at most 4096 arrays and objects in a frame, but got more",
    }
    objects = (
        f'{{"jsonrpc":"2.0","method":"toy.open","params":{{"x":[{",".join(["{}"] * 5000)}]}}}}'
    )
    assert (await answer(objects))["error"]["code"] == -32600  # objects count as arrays do
    in_text = orjson.dumps(call("toy.params", name="ab", tags=["[" * 5000])).decode()
    assert (await answer(in_text))["result"] == {"ok": True}


async def test_a_batch_of_max_batch_requests_is_answered_and_one_more_refused() -> None:
    """100 requests in a batch get 100 replies; 101 get one error."""
    full = await answer([call("toy.open", number) for number in range(MAX_BATCH)])
    assert MAX_BATCH == 100
    assert [reply["id"] for reply in full] == list(range(100))
    over = await answer([call("toy.open", number) for number in range(MAX_BATCH + 1)])
    assert over["error"]["message"] == "Expected at most 100 requests in a batch, but got 101"


async def test_envelope_errors_say_what_was_expected() -> None:
    """Each malformed request gets its own code and message, with id null where the
    request had no usable id."""
    cases: list[tuple[Any, int, str]] = [
        ("{", -32700, "Expected a JSON text"),
        ([], -32600, "Expected a non-empty batch"),
        (1, -32600, "Expected a request object"),
        ({**call("toy.open"), "id": True}, -32600, "Expected an id of string, number or null"),
        ({**call("toy.open"), "jsonrpc": "1.0"}, -32600, "Expected jsonrpc '2.0', but got '1.0'"),
        ({**call("toy.open"), "method": 7}, -32600, "Expected method to be a string"),
        (
            {**call("toy.open"), "params": [1]},
            -32602,
            "Expected params by name (an object), but got an array",
        ),
        (
            {**call("toy.open"), "params": "x"},
            -32600,
            "Expected params to be an object, but got string",
        ),
        (call("nope"), -32601, "No method 'nope'"),
    ]
    for frame, code, message in cases:
        reply = await answer(frame)
        assert reply["error"] == {"code": code, "message": message}, frame


async def test_a_method_needs_a_login_unless_anonymous() -> None:
    """Before login only anonymous methods answer; the others say to log in first."""
    assert (await answer(call("toy.open"), logged_in=False))["result"] == {"open": True}
    refused = await answer(call("toy.either", left=1), logged_in=False)
    assert refused["error"] == {"code": -32001, "message": "Log in before calling 'toy.either'"}


async def test_a_notification_is_never_answered_unless_not_a_request() -> None:
    """A request without an id gets no reply, an error neither; an invalid request is
    answered with id null all the same."""
    assert await answer({"jsonrpc": "2.0", "method": "toy.open"}) is None
    assert await answer({"jsonrpc": "2.0", "method": "nope"}) is None
    assert await answer({"jsonrpc": "2.0", "method": "toy.fail"}) is None
    invalid_request = await answer({"jsonrpc": "1.0", "method": "toy.open"})
    assert invalid_request["id"] is None
    assert invalid_request["error"]["code"] == -32600
    assert await answer([{"jsonrpc": "2.0", "method": "toy.open"}]) is None


async def test_a_failing_handler_is_an_internal_error_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug is answered -32603 "Internal error" and logged with its traceback; a store
    that cannot write is answered the same, and not logged again per request."""
    with caplog.at_level("ERROR", logger="messenger.server.rpc"):
        bug = await answer(call("toy.fail"))
        assert bug["error"] == {"code": -32603, "message": "Internal error"}
        assert [record.exc_info is not None for record in caplog.records] == [True]
        caplog.clear()
        full = await answer(call("toy.fail", store=True))
        assert full["error"] == {"code": -32603, "message": "Internal error"}
        assert caplog.records == []


async def test_every_answer_is_counted_with_its_method_and_code() -> None:
    """on_answer hears each request answered: its method (None if not a string) and its
    error code (None for a result), notifications too."""
    rpc = dispatcher()
    heard: list[tuple[str | None, int | None]] = []
    rpc.on_answer = lambda method, code: heard.append((method, code))
    frame = [call("toy.open"), call("nope", 2), {"jsonrpc": "2.0", "method": "toy.open"}, 5]
    await rpc.handle(None, rpc.parse(orjson.dumps(frame)))
    assert heard == [("toy.open", None), ("nope", -32601), ("toy.open", None), (None, -32600)]


async def test_every_call_waits_for_the_store_to_settle_errors_too() -> None:
    """settled runs after every call that reached its method, one whose params are
    refused included; a call of no method does not wait."""
    settled: list[int] = []

    async def settle() -> None:
        settled.append(1)

    rpc = Dispatcher(registry(), lambda session: True, settled=settle)
    for frame in (call("toy.open"), call("toy.either", 2), call("nope", 3)):
        await rpc.handle(None, rpc.parse(orjson.dumps(frame)))
    assert len(settled) == 2


async def test_a_method_the_writer_decides_still_runs_its_handler_here() -> None:
    """In cluster mode ``forwards`` only orders batches: the handler runs here, params
    validated here (its command goes to the writer from the executor, issue 7)."""
    rpc = dispatcher()
    rpc.forwards = lambda name: name == "toy.either"
    good = await rpc.handle(None, rpc.parse(orjson.dumps(call("toy.either", left=1))))
    assert good is not None
    assert orjson.loads(good)["result"] == {"left": 1, "right": None}
    bad = await rpc.handle(None, rpc.parse(orjson.dumps(call("toy.either"))))
    assert bad is not None
    assert orjson.loads(bad)["error"]["code"] == -32602


async def steps_of(batch: list[dict[str, Any]], forwards: str | None = None) -> list[str]:
    """The order the batch's handlers started (+) and ended (-) in."""
    toy = Toy()
    rpc = Dispatcher(registry(toy), lambda session: True)
    if forwards is not None:
        rpc.forwards = lambda name: name == forwards
    await rpc.handle(None, rpc.parse(orjson.dumps(batch)))
    return toy.steps


async def test_reads_in_a_batch_run_together_and_a_session_method_alone() -> None:
    """Two reads of one batch overlap (they wait for the disk together); with a method
    that changes the session anywhere in the batch, each request ends before the next."""
    reads = [call("toy.step", 1, label="a"), call("toy.step", 2, label="b")]
    assert await steps_of(reads) == ["a+", "b+", "a-", "b-"]
    ordered = [call("toy.step", 1, label="a"), call("toy.session", 2, label="b")]
    assert await steps_of(ordered) == ["a+", "a-", "b+", "b-"]


async def test_a_batch_with_a_forwarded_method_runs_in_order() -> None:
    """On a follower, a batch holding a call the writer decides runs one request at a
    time (the reads after it must see it); one holding none still runs together."""
    reads = [call("toy.step", 1, label="a"), call("toy.step", 2, label="b")]
    assert await steps_of(reads, forwards="toy.step") == ["a+", "a-", "b+", "b-"]
    assert await steps_of(reads, forwards="toy.other") == ["a+", "b+", "a-", "b-"]
