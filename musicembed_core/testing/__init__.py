"""Testing musicembed plugins: helpers, pytest fixtures and conformance suites.

* helpers: :func:`run_cli`, :func:`run_params`, :func:`make_fake_dist`, :func:`save_to_hub_cache`,
  :func:`registered_plugin`, :func:`subprocess_env`,
  :func:`records_from` (records from parallel ids / vectors / metadata lists);
* fixtures (``musicembed_core.testing.pytest_plugin``, loaded automatically through
  the ``pytest11`` entry point): clean gin, ``register_plugin``, ``offline_hub``,
  ``hub_cache``, ``example_dir``, ``musicembed_manager``;
* suites to subclass: :class:`EncoderSuite`, :class:`ExporterSuite`, :class:`SinkSuite`,
  :class:`ProjectorSuite`, :class:`GinFolderSuite`, :class:`RunFaultSuite`
  (imported on first use: importing this package stays cheap).

See docs/plugin-authoring.md, "Test it with the conformance kit".
"""

from __future__ import annotations

from typing import Any

try:
    import pytest
except ImportError:  # pragma: no cover - the helpers work without pytest (benchmarks)
    pytest = None  # type: ignore[assignment]
else:
    # The suites' plain `assert`s get pytest's detailed messages (must precede their import).
    pytest.register_assert_rewrite(
        "musicembed_core.testing.encoder_suite",
        "musicembed_core.testing.exporter_suite",
        "musicembed_core.testing.sink_suite",
        "musicembed_core.testing.projector_suite",
        "musicembed_core.testing.gin_suite",
        "musicembed_core.testing.run_fault_suite",
    )

from .records import records_from  # noqa: E402
from .helpers import (  # noqa: E402
    REPO,
    make_fake_dist,
    registered_plugin,
    run_cli,
    run_params,
    save_to_hub_cache,
    subprocess_env,
)

_SUITES = {
    "EncoderSuite": "encoder_suite",
    "ExporterSuite": "exporter_suite",
    "SinkSuite": "sink_suite",
    "ProjectorSuite": "projector_suite",
    "GinFolderSuite": "gin_suite",
    "RunFaultSuite": "run_fault_suite",
}


def __getattr__(name: str) -> Any:
    if name in _SUITES:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_SUITES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "REPO",
    "EncoderSuite",
    "ExporterSuite",
    "GinFolderSuite",
    "ProjectorSuite",
    "RunFaultSuite",
    "SinkSuite",
    "make_fake_dist",
    "records_from",
    "registered_plugin",
    "run_cli",
    "run_params",
    "save_to_hub_cache",
    "subprocess_env",
]
