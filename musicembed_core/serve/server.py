"""Running the app with uvicorn: in the foreground (``musicembed serve``) or in a
background thread on a free port (tests, benchmarks)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .app import DEFAULT_MAX_UPLOAD, create_app
from .library import Library

log = logging.getLogger("musicembed.serve")


def _config(app: Any, host: str, port: int, log_level: str, access_log: bool) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                          log_config=None, timeout_graceful_shutdown=5)


def serve(library: Library, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD, watch: float | None = None,
          log_level: str = "info", access_log: bool = True) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM), then close the indexes."""
    import uvicorn

    app = create_app(library, token=token, max_upload_bytes=max_upload_bytes)
    if watch:
        library.watch(watch)
    server = uvicorn.Server(_config(app, host, port, log_level, access_log))
    try:
        server.run()
    finally:
        library.close()


class BackgroundServer:
    """The app served by uvicorn in a thread of this process (port 0: a free port).

    ``with BackgroundServer(library) as srv: httpx.get(srv.url + "/health")``.
    """

    def __init__(self, library: Library, *, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
                 log_level: str = "warning", close_library: bool = True) -> None:
        import uvicorn

        self.library = library
        self.app = create_app(library, token=token, max_upload_bytes=max_upload_bytes)
        self.server = uvicorn.Server(_config(self.app, host, port, log_level, False))
        self.close_library = close_library
        self.thread = threading.Thread(target=self.server.run, name="musicembed-serve", daemon=True)
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        if self.close_library:
            self.library.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
