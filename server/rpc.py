"""JSON-RPC 2.0 (https://www.jsonrpc.org/specification) over one frame, and the
method registry.

A method is declared once, by the signature of its handler: keyword-only
parameters with ``Annotated`` constraints. The same declaration validates the
params of every call and produces the OpenRPC document (``rpc.discover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import re
import types
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar, Union

import orjson

from server.errors import (
    InternalError,
    InvalidParams,
    InvalidRequest,
    MessengerError,
    MethodNotFound,
    ParseError,
    TooLarge,
    Unauthenticated,
)
from server.store import StoreFailed

MAX_BATCH: Final = 100  # requests in one batch: bounds the work and memory of one frame
MAX_CONTAINERS: Final = 4096  # arrays and objects in one frame (a full batch needs 200)
QUOTED_CHARS: Final = 32  # of a client's string that an error message may quote
QUOTED_ITEMS: Final = 3  # unexpected param names an error message may list

logger = logging.getLogger("messenger.server.rpc")


# -- constraints, for use in Annotated[...] ------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Length:
    """Length of a string, in characters (Unicode code points)."""

    min: int
    max: int


@dataclasses.dataclass(frozen=True, slots=True)
class Range:
    min: int | None = None
    max: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Pattern:
    regex: re.Pattern[str]
    what: str  # how to name a matching value in an error message


@dataclasses.dataclass(frozen=True, slots=True)
class Doc:
    text: str


_JSON_TYPES: Final[dict[type, str]] = {
    str: "string",
    int: "integer",
    bool: "boolean",
    float: "number",
    dict: "object",
    list: "array",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: type
    required: bool
    length: Length | None = None
    range: Range | None = None
    pattern: Pattern | None = None
    doc: str = ""

    def check(self, value: Any) -> Any:
        kind = self.kind
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise InvalidParams(
                f"Expected {self.name!r} to be {_JSON_TYPES[kind]}, but got {_json_type(value)}"
            )
        if self.length is not None and not self.length.min <= len(value) <= self.length.max:
            unit = "items" if kind is list else "characters"
            raise InvalidParams(
                f"Expected {self.name!r} of {self.length.min} to {self.length.max} "
                f"{unit}, but got {len(value)}"
            )
        if self.range is not None:
            low, high = self.range.min, self.range.max
            if (low is not None and value < low) or (high is not None and value > high):
                wanted = (
                    f"at least {low}"
                    if high is None
                    else f"at most {high}"
                    if low is None
                    else f"from {low} to {high}"
                )
                raise InvalidParams(f"Expected {self.name!r} {wanted}, but got {value}")
        if self.pattern is not None and not self.pattern.regex.fullmatch(value):
            raise InvalidParams(
                f"Expected {self.name!r} to be {self.pattern.what}, but got {quote(value)}"
            )
        return value

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": _JSON_TYPES[self.kind]}
        if self.length is not None and self.kind is list:
            schema["minItems"], schema["maxItems"] = self.length.min, self.length.max
        elif self.length is not None:
            schema["minLength"], schema["maxLength"] = self.length.min, self.length.max
        if self.range is not None:
            if self.range.min is not None:
                schema["minimum"] = self.range.min
            if self.range.max is not None:
                schema["maximum"] = self.range.max
        if self.pattern is not None:
            schema["pattern"] = f"^(?:{self.pattern.regex.pattern})$"  # fullmatch, as checked
        return schema


def quote(value: Any) -> str:
    """``value`` as an error message may show it: a string as the repr of at most its
    first ``QUOTED_CHARS`` characters, anything else by its JSON type. Never the whole
    input: a frame of 1 MiB must not come back as a message five times larger, and
    the repr of a value nested 1,000 deep would exceed the recursion limit."""
    if not isinstance(value, str):
        return _json_type(value)
    if len(value) <= QUOTED_CHARS:
        return repr(value)
    return f"{value[:QUOTED_CHARS]!r}... ({len(value)} characters)"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for kind, name in _JSON_TYPES.items():
        if isinstance(value, kind):
            return name
    return type(value).__name__


# -- methods -------------------------------------------------------------------

S = TypeVar("S")
Handler = Callable[..., Awaitable[dict[str, Any]]]


@dataclasses.dataclass(frozen=True, slots=True)
class Method:
    name: str
    handler: Handler
    params: tuple[Param, ...]
    summary: str
    anonymous: bool  # may be called before login
    ordered: bool  # changes the session: handled alone, after the requests before it
    exclusive: tuple[tuple[str, ...], ...]  # groups of params of which exactly one is given

    def bind(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate ``params`` against the declaration; the handler's keyword arguments."""
        known = {param.name: param for param in self.params}
        unexpected = sorted(set(params) - set(known))
        if unexpected:
            shown = ", ".join(quote(name) for name in unexpected[:QUOTED_ITEMS])
            hidden = len(unexpected) - QUOTED_ITEMS
            more = f" and {hidden} more" if hidden > 0 else ""
            raise InvalidParams(
                f"Expected params among {sorted(known)}, but got unexpected [{shown}]{more}"
            )
        bound: dict[str, Any] = {}
        for param in self.params:
            value = params.get(param.name)
            if value is None:  # JSON null stands for an absent optional param
                if param.required:
                    raise InvalidParams(f"Expected param {param.name!r}, but it is missing")
                continue
            bound[param.name] = param.check(value)
        for group in self.exclusive:
            given = [name for name in group if name in bound]
            if len(given) != 1:
                raise InvalidParams(
                    f"Expected exactly one of {list(group)}, but got {given or 'none'}"
                )
        return bound

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "paramStructure": "by-name",
            "params": [
                {
                    "name": param.name,
                    "required": param.required,
                    "description": param.doc,
                    "schema": param.schema(),
                }
                for param in self.params
            ],
            "result": {"name": "result", "schema": {"type": "object"}},
        }


def rpc_method(
    name: str,
    *,
    anonymous: bool = False,
    ordered: bool = False,
    exclusive: tuple[tuple[str, ...], ...] = (),
) -> Callable[[S], S]:
    """Mark a handler ``async def h(self, session, *, param: Annotated[...], ...)``."""

    def mark(handler: S) -> S:
        _MARKS[handler] = _Mark(name, anonymous, ordered or anonymous, exclusive)
        return handler

    return mark


@dataclasses.dataclass(frozen=True, slots=True)
class _Mark:
    name: str
    anonymous: bool
    ordered: bool
    exclusive: tuple[tuple[str, ...], ...]


_MARKS: Final[dict[object, _Mark]] = {}  # handler function -> how rpc_method marked it


def _params_of(handler: Handler) -> tuple[Param, ...]:
    hints = typing.get_type_hints(handler, include_extras=True)
    params = []
    for parameter in inspect.signature(handler).parameters.values():
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        hint = hints[parameter.name]
        metadata: tuple[Any, ...] = ()
        while True:  # Annotated[X | None, ...] and Annotated[X, ...] | None alike
            if typing.get_origin(hint) is typing.Annotated:
                hint, *extras = typing.get_args(hint)
                metadata += tuple(extras)
            elif typing.get_origin(hint) in (Union, types.UnionType):
                hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
            else:
                break
        kind = typing.get_origin(hint) or hint
        assert kind in _JSON_TYPES, f"{handler.__qualname__}: no JSON type for {hint}"
        found = {type(item): item for item in metadata}
        params.append(
            Param(
                name=parameter.name,
                kind=kind,
                required=parameter.default is inspect.Parameter.empty,
                length=found.get(Length),
                range=found.get(Range),
                pattern=found.get(Pattern),
                doc=found[Doc].text if Doc in found else "",
            )
        )
    return tuple(params)


class Registry:
    """Every method of the given handler objects, by name."""

    def __init__(self, *targets: object, title: str, version: str) -> None:
        self.title = title
        self.version = version
        self.methods: dict[str, Method] = {}
        for target in targets:
            self.add(target)

    def add(self, target: object) -> None:
        """Register every handler of ``target`` marked with ``rpc_method``."""
        for _, handler in inspect.getmembers(target, inspect.ismethod):
            mark = _MARKS.get(handler.__func__)
            if mark is None:
                continue
            assert mark.name not in self.methods, f"method {mark.name!r} declared twice"
            doc = inspect.getdoc(handler) or ""
            self.methods[mark.name] = Method(
                mark.name,
                handler,
                _params_of(handler),
                doc.split("\n\n")[0],
                mark.anonymous,
                mark.ordered,
                mark.exclusive,
            )

    def openrpc(self) -> dict[str, Any]:
        return {
            "openrpc": "1.3.2",
            "info": {"title": self.title, "version": self.version},
            "methods": [self.methods[name].describe() for name in sorted(self.methods)],
        }


# -- the envelope --------------------------------------------------------------


def _reply_error(request_id: Any, error: MessengerError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": error.to_wire(), "id": request_id}


def _is_valid_id(value: Any) -> bool:
    # Section 4: "a String, Number, or NULL value if included".
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


class Dispatcher:
    """Turns one frame into at most one reply frame (section 6 for batches)."""

    def __init__(
        self,
        registry: Registry,
        logged_in: Callable[[Any], bool],
        settled: Callable[[], Awaitable[None]] | None = None,
        reply_limit: int = 2**20,
    ) -> None:
        self.registry = registry
        self.logged_in = logged_in
        self.settled = settled
        self.reply_limit = reply_limit  # bytes of a reply frame
        # Told of every request answered: its method (if a string) and error code.
        self.on_answer: Callable[[str | None, int | None], None] | None = None
        # Cluster mode: the methods the writer node decides (their handlers send it a
        # command, server/cluster.py): a batch holding one runs in order.
        self.forwards: Callable[[str], bool] = lambda name: False
        # Every handler runs inside this (``Service.pause.request``): a compaction
        # holds new requests while it reads a state that must not change.
        self.admit: Callable[[], contextlib.AbstractAsyncContextManager[None]] = _nothing

    def parse(self, frame: str | bytes) -> Any:
        if isinstance(frame, str) and _too_many_containers(frame):
            return _TOO_MANY_CONTAINERS
        try:
            return orjson.loads(frame)
        except orjson.JSONDecodeError:
            return _PARSE_ERROR

    async def handle(self, session: Any, payload: Any) -> bytes | None:
        if payload is _PARSE_ERROR:
            return orjson.dumps(_reply_error(None, ParseError("Expected a JSON text")))
        if payload is _TOO_MANY_CONTAINERS:
            return orjson.dumps(
                _reply_error(
                    None,
                    InvalidRequest(
                        f"Expected at most {MAX_CONTAINERS} arrays and objects in a frame, "
                        "but got more"
                    ),
                )
            )
        if isinstance(payload, list):
            if not payload:
                return orjson.dumps(
                    _reply_error(None, InvalidRequest("Expected a non-empty batch"))
                )
            if len(payload) > MAX_BATCH:
                return orjson.dumps(
                    _reply_error(
                        None,
                        InvalidRequest(
                            f"Expected at most {MAX_BATCH} requests in a batch, "
                            f"but got {len(payload)}"
                        ),
                    )
                )
            if self.needs_order(payload) or self._forwarded_in(payload):
                # A login must take effect before what follows; so must a call the
                # writer decides before the reads after it on this node (a follower).
                replies = [await self.call(session, request) for request in payload]
            else:  # each call decides in order, then they wait for the disk together
                replies = await asyncio.gather(*(self.call(session, r) for r in payload))
            answered = [reply for reply in replies if reply is not None]
            return self._batch_reply(answered) if answered else None
        reply = await self.call(session, payload)
        return None if reply is None else orjson.dumps(reply)

    def _batch_reply(self, replies: list[dict[str, Any]]) -> bytes:
        """The replies as one array that fits a frame: each result is within the reply
        budget alone, but not all of them together; the largest results give way to
        -32006 until it fits (results that big come from reads, which change nothing)."""
        encoded = [orjson.dumps(reply) for reply in replies]
        size = sum(map(len, encoded)) + len(encoded) + 1
        by_size = sorted(range(len(replies)), key=lambda i: len(encoded[i]), reverse=True)
        for index in by_size:
            if size <= self.reply_limit:
                break
            if "result" not in replies[index]:
                continue
            instead = orjson.dumps(
                _reply_error(
                    replies[index]["id"],
                    TooLarge(
                        "Expected the batch's replies to fit in a frame, but this one "
                        "does not fit with the others: ask for it on its own",
                        self.reply_limit,
                    ),
                )
            )
            size += len(instead) - len(encoded[index])
            encoded[index] = instead
        return b"[" + b",".join(encoded) + b"]"

    def _forwarded_in(self, batch: list[Any]) -> bool:
        return any(
            isinstance(request, dict)
            and isinstance(request.get("method"), str)
            and self.forwards(request["method"])
            for request in batch
        )

    def needs_order(self, payload: Any) -> bool:
        """True when the frame holds a session method: it must finish before the next."""
        requests = payload if isinstance(payload, list) else [payload]
        for request in requests:
            name = request.get("method") if isinstance(request, dict) else None
            method = self.registry.methods.get(name) if isinstance(name, str) else None
            if method is not None and method.ordered:
                return True
        return False

    async def call(self, session: Any, request: Any) -> dict[str, Any] | None:
        reply = await self._call(session, request)
        if self.on_answer is not None:
            name = request.get("method") if isinstance(request, dict) else None
            error = None if reply is None else reply.get("error")
            self.on_answer(name if isinstance(name, str) else None, error and error["code"])
        return reply

    async def _call(self, session: Any, request: Any) -> dict[str, Any] | None:
        if not isinstance(request, dict):
            return _reply_error(None, InvalidRequest("Expected a request object"))
        request_id = request.get("id")
        if not _is_valid_id(request_id):
            return _reply_error(None, InvalidRequest("Expected an id of string, number or null"))
        notification = "id" not in request
        try:
            if request.get("jsonrpc") != "2.0":
                version = quote(request.get("jsonrpc"))
                raise InvalidRequest(f"Expected jsonrpc '2.0', but got {version}")
            name = request.get("method")
            if not isinstance(name, str):
                raise InvalidRequest("Expected method to be a string")
            params = request.get("params", {})
            if isinstance(params, list):
                raise InvalidParams("Expected params by name (an object), but got an array")
            if not isinstance(params, dict):
                raise InvalidRequest(
                    f"Expected params to be an object, but got {_json_type(params)}"
                )
            method = self.registry.methods.get(name)
            if method is None:
                raise MethodNotFound(f"No method {quote(name)}")
            if not method.anonymous and not self.logged_in(session):
                raise Unauthenticated(f"Log in before calling {name!r}")
            try:
                bound = method.bind(params)
                async with self.admit():
                    result = await method.handler(session, **bound)
            finally:
                if self.settled is not None:
                    # A reply, an error too, may show only what is durable: wait for
                    # whatever other requests changed and this one may have seen.
                    await self.settled()
        except InvalidRequest as error:
            # Not a Request object, so not a Notification either: always answered,
            # with id null when it has none (section 5.1's and section 7's examples).
            return _reply_error(request_id, error)
        except MessengerError as error:
            return None if notification else _reply_error(request_id, error)
        except Exception as error:
            # The log said once, in one line, that it cannot write (a full disk): every
            # request after it fails the same way, and none of them is a bug.
            if not isinstance(error, StoreFailed):
                logger.exception("method %r failed", request.get("method"))
            internal = InternalError("Internal error")
            return None if notification else _reply_error(request_id, internal)
        if notification:
            return None
        return {"jsonrpc": "2.0", "result": result, "id": request_id}


_PARSE_ERROR: Final = object()
_TOO_MANY_CONTAINERS: Final = object()
_STRINGS: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')


def _too_many_containers(frame: str) -> bool:
    """Whether ``frame`` holds more than ``MAX_CONTAINERS`` JSON arrays and objects. The
    brackets are counted first (fast); only when there are many are those inside
    strings left out (a text may be all brackets). 1 MiB of ``[[],[],...]`` parses
    into 350k lists: 20 MB and 0.4 s of the event loop, for nothing; the check takes
    1 ms."""
    if frame.count("[") + frame.count("{") <= MAX_CONTAINERS:
        return False
    outside = _STRINGS.sub("", frame)
    return outside.count("[") + outside.count("{") > MAX_CONTAINERS


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield
