"""Serving a model folder over HTTP: MLflow's scoring app, behind a guard, in this process.

The server runs in the interpreter that runs automl (uvicorn is imported, never looked
up on PATH), on a socket bound before the model is loaded, so a port in use is said at
once. The guard answers requests MLflow's app would fail on with a 500 or read without
limit: a body over the size limit (413), no Content-Type, a JSON body Python cannot read
(a number of thousands of digits, arrays nested thousands deep), each a 400 that says why,
in MLflow's error form. It also shortens MLflow's own 400 messages, which repeat the
whole input before the reason, to the reason on one line.

Like the rest of this folder it imports nothing else of automl.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
MAX_BODY_MIB = 64  # the default limit of a request body
CONTENT_TYPES = "application/json, text/csv or application/vnd.apache.parquet"

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Refused(Exception):
    """A request answered by the guard: its HTTP status and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def listen(host: str, port: int) -> socket.socket:
    """A socket bound and listening on ``host:port``; OSError when the port is in use or
    the address is not on this machine."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def serve_folder(folder: Path, sock: socket.socket, max_body: int = MAX_BODY_MIB * MIB) -> None:
    """Load the model in ``folder`` and answer on ``sock`` until stopped: Ctrl-C and
    SIGTERM (docker stop) both end in ``KeyboardInterrupt``, once uvicorn has answered the
    requests in flight (it raises the signal it caught again when it is done)."""
    import uvicorn
    from mlflow.pyfunc import load_model, scoring_server

    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        model = load_model(str(folder))
        app = Guard(scoring_server.init(model), max_body)
        config = uvicorn.Config(app, timeout_graceful_shutdown=10, log_level="info")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)


class Guard:
    """The ASGI app in front of MLflow's: checks ``POST /invocations`` before MLflow reads
    it, and shortens MLflow's 400 answers; passes everything else through."""

    def __init__(self, app: AsgiApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/invocations" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._body(scope, receive)
            if body is None:  # the client went away
                return
            await asyncio.to_thread(check_body, _header(scope, b"content-type"), body)
        except Refused as refused:
            await _answer(send, refused.status, refused.reason)
            return
        await self.app(scope, _replay(body, receive), _shortening(send))

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, refused (413) as soon as it is known to exceed the limit: from
        its Content-Length before reading, or while reading a body sent in chunks."""
        declared = _header(scope, b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise Refused(413, _too_large(int(declared), self.max_body))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise Refused(413, _too_large(size, self.max_body))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def check_body(content_type: str | None, body: bytes) -> None:
    """Refuse (400) a request without a Content-Type, or a JSON body Python cannot read;
    other content types are MLflow's to answer."""
    if not content_type:
        raise Refused(400, f"the request has no Content-Type header: send {CONTENT_TYPES}")
    if content_type.split(";")[0].strip().lower() != "application/json":
        return
    try:
        json.loads(body)
    except RecursionError:
        raise Refused(400, "the JSON body is nested too deeply to be read") from None
    except UnicodeDecodeError as exc:
        raise Refused(400, f"the JSON body is not UTF-8 text: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise Refused(400, f"the body is not valid JSON: {exc}") from None
    except ValueError:  # an integer longer than Python converts
        digits = sys.get_int_max_str_digits()
        raise Refused(400, f"the JSON body holds a number of more than {digits} digits") from None


def short_reason(message: str) -> str:
    """MLflow's message without the input it repeats, on one line: ``Failed to predict
    data '<the whole array>'. Error: Failed to enforce schema of data '<again>' with
    schema '<schema>'. Error: <reason>`` becomes the schema and the reason."""
    predict, schema = "Failed to predict data '", "Failed to enforce schema of data '"
    if message.startswith(predict) and "'. \nError: " in message:
        message = message.split("'. \nError: ", 1)[1]
    if message.startswith(schema) and "' with schema '" in message:
        expected, _, reason = message.split("' with schema '", 1)[1].partition("'. Error: ")
        message = f"{reason.strip()} (the model's signature: {expected})"
    return " ".join(message.split())


def _shortening(send: Send) -> Send:
    """``send``, with the message of a 400 answer in MLflow's JSON form shortened."""
    held: list[Message] = []

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and message.get("status") == 400:
            held.append(message)
            return
        if not held or message["type"] != "http.response.body":
            await send(message)
            return
        held.append(message)
        if message.get("more_body", False):
            return
        start, parts = held[0], held[1:]
        body = _shortened(b"".join(part.get("body", b"") for part in parts))
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        held.clear()
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def _shortened(body: bytes) -> bytes:
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if not isinstance(document, dict) or not isinstance(document.get("message"), str):
        return body
    document["message"] = short_reason(document["message"])
    return json.dumps(document).encode()


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, then waits on the client."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _too_large(size: int, limit: int) -> str:
    return (
        f"the body of {size:,} bytes is larger than the limit of {limit:,} bytes "
        "(automl serve --max-body-mib)"
    )


async def _answer(send: Send, status: int, reason: str) -> None:
    """An error in MLflow's form: ``{"error_code": ..., "message": ...}``."""
    code = "REQUEST_LIMIT_EXCEEDED" if status == 413 else "BAD_REQUEST"
    body = json.dumps({"error_code": code, "message": reason}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
