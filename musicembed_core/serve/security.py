"""What the service lets through: where it binds, who may ask, how much they may send,
and which files it may read.

* It binds to a loopback address unless ``--allow-remote`` is given, and then only
  with an API token (``--token`` or ``MUSICEMBED_TOKEN``).
* With a token, every request must carry it: ``Authorization: Bearer TOKEN``, the
  ``?token=TOKEN`` query parameter (an ``<audio>`` element cannot send headers), or
  the ``musicembed_token`` cookie the service sets (HttpOnly, SameSite=Strict) when a
  page was opened with ``?token=``.
* Request bodies are limited (``--max-upload-mb``): a declared ``Content-Length``
  over the limit is refused at once, and a body sent without one is counted while
  it streams in and refused as soon as it passes the limit.
* Audio is served only for files inside ``run.source``: the id is joined to the
  source, resolved (symlinks, ``..``) and must stay inside the resolved source.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, quote, unquote_to_bytes

from ..errors import ConfigError, MusicembedError
from ..pipeline import source_base

TOKEN_ENV = "MUSICEMBED_TOKEN"
TOKEN_COOKIE = "musicembed_token"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ServeError(MusicembedError):
    """A request the service refuses, with its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class UploadTooLarge(ServeError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body is larger than the service's limit of {limit / 1e6:g} MB: send a "
            f"shorter clip, or start `musicembed serve` with a larger --max-upload-mb", 413)


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, allow_remote: bool, token: str | None) -> None:
    """Refuse to listen beyond this machine unless asked to, and never without a token."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise ConfigError(
            f"--host {host}: the service would answer other machines, and it can read your "
            f"library and every file under run.source. To allow it, add --allow-remote and an "
            f"API token (--token TOKEN or the {TOKEN_ENV} environment variable); to keep it on "
            f"this machine, leave --host at 127.0.0.1"
        )
    if not token:
        raise ConfigError(
            f"--host {host} --allow-remote needs an API token that every request must carry: "
            f"give --token TOKEN or set {TOKEN_ENV} (e.g. `export {TOKEN_ENV}=$(openssl rand "
            f"-hex 16)`)"
        )


async def _send_json(send: Send, status: int, message: str,
                     extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TokenMiddleware:
    """Every HTTP request must carry the token (header, query parameter or cookie)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode("utf-8")

    def _given(self, scope: Scope) -> tuple[bytes | None, bool]:
        """The token the request carries, and whether it came in the query string."""
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            return auth[7:].strip(), False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][-1].encode("utf-8", "surrogateescape"), True
        for part in headers.get(b"cookie", b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == TOKEN_COOKIE.encode():
                return unquote_to_bytes(value), False
        return None, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given, in_query = self._given(scope)
        if given is None or not hmac.compare_digest(given, self.token):
            await _send_json(
                send, 401,
                "this service needs its API token: send 'Authorization: Bearer TOKEN' or add "
                "?token=TOKEN to the address" if given is None else "wrong API token",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        if not in_query:
            await self.app(scope, receive, send)
            return

        cookie = (f"{TOKEN_COOKIE}={quote(self.token, safe='')}; Path=/; HttpOnly; "
                  f"SameSite=Strict").encode("latin-1")

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes, declared or counted while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = int(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _send_json(send, 400, f"bad Content-Length header {declared.decode('latin-1')!r}")
                return
            if size > self.limit:
                await _send_json(send, 413, str(UploadTooLarge(self.limit)),
                                 [(b"connection", b"close")])
                return
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise UploadTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


def resolve_track_file(source: str | os.PathLike[str], track_id: str) -> Path:
    """The file of ``track_id`` inside ``run.source``, or a :class:`ServeError`.

    The id is joined to the source and resolved (``..``, symlinks); the result must lie
    inside the resolved source. Absolute ids, ``..`` segments that climb out, and
    symlinks that point outside the library are refused (403).
    """
    root = Path(source).expanduser()
    try:
        base = source_base(root).resolve(strict=True)
    except OSError as exc:
        raise ServeError(f"run.source {str(root)!r} is not readable ({exc})", 503) from exc
    if not track_id or "\x00" in track_id:
        raise ServeError(f"track id {track_id!r} is not a valid id", 400)
    if os.path.isabs(track_id) or track_id.startswith("\\"):
        raise ServeError(
            f"track id {track_id!r} is an absolute path: ids are paths relative to run.source", 403)
    try:
        path = (base / track_id).resolve(strict=False)
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, bad names
        raise ServeError(f"track id {track_id!r} cannot be resolved ({exc})", 400) from exc
    if path != base and base not in path.parents:
        raise ServeError(
            f"track id {track_id!r} resolves outside the library folder (run.source): only files "
            f"inside it are served", 403)
    return path
