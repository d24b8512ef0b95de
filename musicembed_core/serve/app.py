"""The ASGI app of ``musicembed serve``: JSON API, audio streaming, the page.

Every answer is JSON (except the audio, the page and the M3U playlists); every
refusal is ``{"error": message}`` with a 4xx status, and anything unexpected is
logged on the server and answered with a JSON 500 that carries no traceback.
Searches go through :func:`musicembed_core.search.search_index`, the function
``musicembed search`` uses, so both give the same answers and the same messages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import os
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator, Callable
from urllib.parse import quote

from fastapi import FastAPI, Query as Param, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import MusicembedError, SinkNotFoundError
from ..search import OpenIndex, Query, TrackNotFoundError, search_index, unknown_track
from .library import Library
from .security import BodyLimitMiddleware, ServeError, TokenMiddleware, resolve_track_file

log = logging.getLogger("musicembed.serve")

STATIC = Path(__file__).parent / "static"
MAX_K = 1000
DEFAULT_MAX_UPLOAD = 50 * 1000 * 1000
AUDIO_TYPES = {
    ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg",
    ".opus": "audio/ogg", ".wav": "audio/wav", ".wave": "audio/wav", ".m4a": "audio/mp4",
    ".mp4": "audio/mp4", ".aac": "audio/aac", ".aif": "audio/aiff", ".aiff": "audio/aiff",
    ".webm": "audio/webm", ".wma": "audio/x-ms-wma",
}
UPLOAD_TYPES = ("audio/", "video/", "application/octet-stream")
"""Accepted content types of an uploaded file (browsers send video/mp4 for some .m4a)."""
SEARCH_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["audio"], "properties": {
            "audio": {"type": "string", "format": "binary",
                      "description": "An audio file (any format `musicembed run` decodes)."},
            "k": {"type": "integer"}, "filter": {"type": "string"}, "embedding": {"type": "string"},
        }}},
        "application/json": {"schema": {"type": "object", "properties": {
            "text": {"type": "string", "description": "Describe the music (needs a text projector)."},
            "id": {"type": "string", "description": "More like this stored track."},
            "k": {"type": "integer"}, "filter": {"type": "string"}, "embedding": {"type": "string"},
        }}},
        "audio/*": {"schema": {"type": "string", "format": "binary",
                               "description": "The audio file as the whole body."}},
    },
}


def status_of(exc: MusicembedError) -> int:
    if isinstance(exc, ServeError):
        return exc.status
    if isinstance(exc, TrackNotFoundError):
        return 404
    if isinstance(exc, SinkNotFoundError):
        return 503
    return 400


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ()) if x not in ("query", "path", "body")]
        where = f"{e['loc'][0]} parameter {'.'.join(loc)!r}" if loc else "request"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _int_field(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ServeError(f"{name!r} must be an integer, got {value!r}")
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ServeError(f"{name!r} must be an integer, got {value!r}") from None
    if not 1 <= n <= MAX_K:
        raise ServeError(f"{name!r} must be within 1..{MAX_K}, got {n}")
    return n


def _suffix(filename: str | None, content_type: str | None) -> str:
    from ..audio import AUDIO_EXTENSIONS

    ext = os.path.splitext(filename or "")[1].lower()
    if ext in AUDIO_EXTENSIONS:
        return ext
    guessed = mimetypes.guess_extension((content_type or "").split(";")[0].strip()) or ""
    return guessed if guessed.lower() in AUDIO_EXTENSIONS else ""


def _check_upload_type(content_type: str | None, what: str) -> None:
    ctype = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if not ctype.startswith(UPLOAD_TYPES):
        raise ServeError(
            f"{what} has content type {ctype!r}: upload an audio file (audio/*, or "
            f"application/octet-stream)", 415)


async def _spooled(chunks: AsyncIterator[bytes], suffix: str) -> str:
    """Write an upload to a temp file and return its path (the caller deletes it); the file
    is deleted here if the upload fails on the way (e.g. a body over the limit)."""
    tmp = tempfile.NamedTemporaryFile(suffix=suffix, prefix="musicembed-query-", delete=False)
    try:
        with tmp:
            async for chunk in chunks:
                tmp.write(chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise
    return tmp.name


async def _file_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(1 << 20):
        yield chunk


def _internal_error(request: Request, exc: BaseException) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error(500, f"internal error while answering {request.method} {request.url.path} "
                      f"({type(exc).__name__}); the details are in the service's log")


class _GuardedRoute(APIRoute):
    """Turns an unexpected exception of an endpoint into a JSON 500 (logged with its
    traceback) right there, so the connection stays usable; expected errors go on to
    their handlers."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except (MusicembedError, StarletteHTTPException, RequestValidationError):
                raise
            except Exception as exc:  # noqa: BLE001 - never a traceback to the client
                return _internal_error(request, exc)

        return guarded


def create_app(library: Library, *, token: str | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD) -> FastAPI:
    """The service over ``library`` (opened). ``token``: required on every request when set."""
    app = FastAPI(
        title="musicembed",
        version=__version__,
        description=(
            "Search a music library indexed by `musicembed run`: more like a stored track, "
            "like an uploaded audio file, or from a text description (with a text projector). "
            "Every error is `{\"error\": message}` with a 4xx status. With an API token, send "
            "`Authorization: Bearer TOKEN` or `?token=TOKEN`."
        ),
        docs_url=None,
        redoc_url=None,
    )
    app.state.library = library
    app.router.route_class = _GuardedRoute
    cfg = library.cfg

    # ------------------------------------------------------------------ errors

    @app.exception_handler(MusicembedError)
    async def on_musicembed_error(request: Request, exc: MusicembedError) -> JSONResponse:
        return error(status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal_error(request, exc)  # outside the endpoints (middleware)

    # ------------------------------------------------------------------ helpers

    def use(embedding: str | None, fn: Callable[[OpenIndex], Any]) -> Any:
        return run_in_threadpool(library.use, embedding, fn)

    async def run_search(query: Query, embedding: str | None) -> dict[str, Any]:
        result = await use(embedding, lambda index: search_index(index, query))
        return result.as_dict()

    def describe(index: OpenIndex) -> dict[str, Any]:
        prep, sink = index.prep, index.sink
        projector = prep.spec.projector
        return {
            "name": prep.name,
            "encoder": prep.encoder.name,
            "dim": prep.space.dim,
            "space_hash": prep.space.hash,
            "sink": sink.name,
            "collection": index.collection,
            "metric": getattr(sink, "metric", None),
            "count": index.count,
            "queries": ["id", "audio", *(["text"] if projector is not None else [])],
            "projector": projector.name if projector is not None else None,
        }

    # ------------------------------------------------------------------ page and docs

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ------------------------------------------------------------------ status

    @app.get("/health", summary="Liveness, track counts and the last reindex")
    def health() -> dict[str, Any]:
        counts = {name: library.use(name, lambda index: index.count) for name in library.names}
        return {"status": "ok", "version": __version__, "source": str(cfg.source),
                "tracks": counts, "reindex": library.status.as_dict()}

    @app.get("/embeddings", summary="The run's embeddings: dims, counts, query kinds")
    def embeddings() -> dict[str, Any]:
        items = [library.use(name, describe) for name in library.names]
        return {"embeddings": items, "default": items[0]["name"] if len(items) == 1 else None}

    # ------------------------------------------------------------------ search

    @app.get("/search", summary="More like this stored track")
    async def search_get(
        id: str | None = Param(None, description="A stored track id (its path relative to run.source)."),
        k: int = Param(10, ge=1, le=MAX_K, description="How many tracks to return."),
        filter: str | None = Param(None, description="Metadata filter in the sink's syntax, "
                                   "e.g. 'duration > 60'."),
        embedding: str | None = Param(None, description="Which embedding (if the run has several)."),
    ) -> dict[str, Any]:
        return await run_search(Query(track_id=id, k=k, filter=filter or None), embedding)

    @app.post("/search", summary="Search by uploaded audio, by text, or by id",
              openapi_extra={"requestBody": SEARCH_BODY})
    async def search_post(
        request: Request,
        k: int = Param(10, ge=1, le=MAX_K),
        filter: str | None = Param(None),
        embedding: str | None = Param(None),
    ) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        params: dict[str, Any] = {"k": k, "filter": filter or None, "embedding": embedding}
        if ctype == "application/json":
            return await _json_search(request, params)
        if ctype == "multipart/form-data":
            return await _multipart_search(request, params)
        if ctype.startswith(UPLOAD_TYPES):
            path = await _spooled(request.stream(), _suffix(None, ctype))
            return await _audio_search(path, "uploaded body", params)
        raise ServeError(
            f"POST /search: content type {ctype or 'none'!r} is not accepted: send an audio file "
            f"(multipart/form-data field 'audio', or an audio/* body) or JSON "
            f"{{\"text\": ...}} / {{\"id\": ...}}", 415)

    async def _json_search(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError as exc:
            raise ServeError(f"POST /search: the body is not valid JSON ({exc})") from None
        if not isinstance(body, dict):
            raise ServeError('POST /search: the JSON body must be an object such as {"text": "calm piano"}')
        unknown = set(body) - {"text", "id", "k", "filter", "embedding"}
        if unknown:
            raise ServeError(f"POST /search: unknown field(s) {', '.join(sorted(unknown))} "
                             f"(use text, id, k, filter, embedding)")
        for key in ("text", "id", "filter", "embedding"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise ServeError(f"POST /search: {key!r} must be a string")
        if "k" in body:
            params["k"] = _int_field(body["k"], "k")
        for key in ("filter", "embedding"):
            if body.get(key):
                params[key] = body[key]
        query = Query(text=body.get("text"), track_id=body.get("id"), k=params["k"],
                      filter=params["filter"])
        return await run_search(query, params["embedding"])

    async def _multipart_search(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("audio")
            if upload is None or isinstance(upload, str):
                raise ServeError("POST /search: the form has no file field 'audio' "
                                 "(e.g. curl -F audio=@song.mp3)")
            if form.get("k"):
                params["k"] = _int_field(form.get("k"), "k")
            for key in ("filter", "embedding"):
                value = form.get(key)
                if isinstance(value, str) and value:
                    params[key] = value
            name = upload.filename or "upload"
            _check_upload_type(upload.content_type, f"the uploaded file {name!r}")
            path = await _spooled(_file_chunks(upload), _suffix(name, upload.content_type))
        return await _audio_search(path, name, params)

    async def _audio_search(path: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            if os.path.getsize(path) == 0:
                raise ServeError(f"the uploaded file {name!r} is empty")
            query = Query(audio=path, audio_name=name, k=params["k"], filter=params["filter"])
            return await run_search(query, params["embedding"])
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass

    # ------------------------------------------------------------------ tracks

    @app.get("/tracks", summary="List stored track ids (paged, optional substring match)")
    def tracks(
        q: str | None = Param(None, description="Keep ids containing this text (case-insensitive)."),
        offset: int = Param(0, ge=0),
        limit: int = Param(100, ge=1, le=MAX_K),
        embedding: str | None = Param(None),
    ) -> dict[str, Any]:
        ids = library.ids(embedding)
        if q:
            needle = q.casefold()
            ids = [i for i in ids if needle in i.casefold()]
        return {"total": len(ids), "offset": offset, "ids": ids[offset: offset + limit]}

    def _metadata(index: OpenIndex, track_id: str) -> dict[str, Any]:
        with index.lock:
            found = index.sink.fetch_metadata([track_id])
        if track_id not in found:
            raise unknown_track(track_id, index.sink, "track")
        return found[track_id]

    @app.get("/tracks/{track_id:path}/audio", summary="The track's audio file (HTTP range requests)",
             response_class=Response)
    def track_audio(track_id: str, embedding: str | None = Param(None)) -> Response:
        path = resolve_track_file(cfg.source, track_id)
        library.use(embedding, lambda index: _metadata(index, track_id))
        if not path.is_file():
            raise ServeError(f"track {track_id!r}: its file {str(path)!r} is gone since it was "
                             f"indexed (POST /reindex updates the index)", 404)
        media = AUDIO_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
        return FileResponse(path, media_type=media or "application/octet-stream",
                            headers={"Cache-Control": "no-cache"})  # and Accept-Ranges: bytes

    @app.get("/tracks/{track_id:path}", summary="A stored track's metadata (and vector)")
    def track(track_id: str, vector: bool = Param(False, description="Add the stored vector."),
              embedding: str | None = Param(None)) -> dict[str, Any]:
        def read(index: OpenIndex) -> dict[str, Any]:
            meta = _metadata(index, track_id)
            out: dict[str, Any] = {"id": track_id, "path": meta.get("path"), "metadata": meta,
                                   "embedding": index.name,
                                   "audio": f"/tracks/{quote(track_id)}/audio"}
            if vector:
                with index.lock:
                    vec = index.sink.fetch([track_id]).get(track_id)
                out["vector"] = None if vec is None else [float(x) for x in vec]
            return out

        return library.use(embedding, read)

    # ------------------------------------------------------------------ playlists

    @app.get("/playlist", summary="A 'more like this' mix from seed tracks (JSON or M3U)")
    def playlist(
        request: Request,
        seed: list[str] = Param([], description="Seed track ids (repeat for several)."),
        text: list[str] = Param([], description="Seed descriptions (needs a text projector)."),
        n: int = Param(25, ge=1, le=MAX_K, description="Tracks in the mix, seeds included."),
        combine: str = Param("best", pattern="^(best|sum)$"),
        max_per_folder: int | None = Param(None, ge=1),
        max_per_tag: list[str] = Param([], description="KEY=N: at most N tracks per metadata value."),
        filter: str | None = Param(None),
        embedding: str | None = Param(None),
        format: str = Param("json", pattern="^(json|m3u8)$"),
        entries: str = Param("path", pattern="^(path|url)$",
                             description="M3U locations: absolute file paths or audio URLs."),
    ) -> Any:
        from ..playlist import Seed, make_playlist, m3u8_text, parse_tag_caps

        seeds = [Seed(track_id=s) for s in seed] + [Seed(text=t) for t in text]
        caps = parse_tag_caps(max_per_tag)
        mix = library.use(embedding, lambda index: make_playlist(
            index, cfg.source, seeds, n, combine=combine, max_per_folder=max_per_folder,
            max_per_tag=caps, filter=filter or None))
        if format == "json":
            return mix.as_dict()
        locations = None
        if entries == "url":
            base = str(request.base_url).rstrip("/")
            locations = [f"{base}/tracks/{quote(e.id)}/audio" for e in mix.entries]
        return PlainTextResponse(m3u8_text(mix, locations=locations),
                                 media_type="audio/x-mpegurl; charset=utf-8",
                                 headers={"Content-Disposition": 'inline; filename="mix.m3u8"'})

    # ------------------------------------------------------------------ reindex

    @app.post("/reindex", status_code=202, summary="Index new and changed files in the background")
    def reindex() -> Any:
        if not library.reindex("request"):
            return JSONResponse({"error": "a reindex is already running (GET /reindex shows it)",
                                 "reindex": library.status.as_dict()}, status_code=409)
        return {"started": True, "reindex": library.status.as_dict()}

    @app.get("/reindex", summary="State of the background reindex")
    def reindex_status() -> dict[str, Any]:
        return library.status.as_dict()

    # ------------------------------------------------------------------ middleware
    # The body limit sits inside the token check: a request without the token is refused
    # before its body is read.
    app.add_middleware(BodyLimitMiddleware, limit=max_upload_bytes)
    if token:
        app.add_middleware(TokenMiddleware, token=token)
    return app
