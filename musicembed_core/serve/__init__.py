"""``musicembed serve``: a search service and a web page over one run, kept warm.

Internal subpackage (not part of the plugin API). Needs the optional extra
``pip install 'musicembed[serve]'`` (FastAPI, uvicorn, python-multipart); the
command says so when they are missing.

Modules: ``library`` (the run's indexes, opened once, swapped after a reindex;
the background incremental run and ``--watch``), ``security`` (bind rules, API
token, upload size limit, which files may be served), ``app`` (the ASGI app: JSON
API, audio with range requests, the static page in ``static/``).
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError

SERVE_EXTRA_HINT = "pip install 'musicembed[serve]'"

_NEEDED = (("fastapi", "fastapi"), ("uvicorn", "uvicorn"),
           (("python_multipart", "multipart"), "python-multipart"))


def require_serve() -> None:
    """Fail with the install command when a package of the ``serve`` extra is missing."""
    missing = []
    for modules, dist in _NEEDED:
        names = modules if isinstance(modules, tuple) else (modules,)
        for name in names:
            try:
                importlib.import_module(name)
                break
            except ImportError:
                continue
        else:
            missing.append(dist)
    if missing:
        raise ConfigError(
            f"`musicembed serve` needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: install the extra with "
            f"`{SERVE_EXTRA_HINT}`"
        )
