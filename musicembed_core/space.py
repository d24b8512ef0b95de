"""Embedding-space identity: which vectors may be compared, stored and searched together."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import SpaceMismatchError


@dataclass(frozen=True)
class EmbeddingSpace:
    """Encoder identity + enricher chain (+ projector) -> a stable hash.

    ``encoder`` is the encoder's :meth:`signature` (name, weights revision,
    sample rate, window/hop, ...); ``enrichers`` the chain's signatures in order.
    """

    encoder: dict[str, Any]
    enrichers: tuple[dict[str, Any], ...]
    dim: int
    projector: dict[str, Any] | None = None
    name: str = field(default="", compare=False)
    """Human label (the embedding's name in the run); not part of the identity."""

    def identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {
            "encoder": self.encoder,
            "enrichers": list(self.enrichers),
            "dim": self.dim,
        }
        if self.projector is not None:
            ident["projector"] = self.projector
        return ident

    @property
    def hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps({"hash": self.hash, "name": self.name, **self.identity()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "EmbeddingSpace":
        d = json.loads(text)
        return cls(
            encoder=d["encoder"],
            enrichers=tuple(d["enrichers"]),
            dim=int(d["dim"]),
            projector=d.get("projector"),
            name=d.get("name", ""),
        )

    def check_record(self, record: Any) -> Any:
        """Validate a :class:`Record` for this space; its vector as float32 ``[dim]``.

        Exporters and sinks call this so a wrong dimension is refused the same way
        everywhere, naming the track and both dims.
        """
        if not isinstance(record.id, str) or not isinstance(record.content_hash, str):
            raise TypeError(f"record {record.id!r}: id and content_hash must be str")
        return self.check_vector(record.id, record.vector)

    def check_vector(self, track_id: str, vector: Any) -> Any:
        """``vector`` as float32 ``[dim]``, or a ValueError naming the track and what is wrong
        (a wrong dim: both dims; NaN or infinite values)."""
        import numpy as np

        vec = np.asarray(vector, dtype=np.float32)
        if vec.shape != (self.dim,):
            raise ValueError(
                f"record {track_id!r}: vector has shape {tuple(vec.shape)} but the embedding "
                f"space {self.hash} has dim {self.dim} (expected shape ({self.dim},))"
            )
        if not np.isfinite(vec).all():
            raise ValueError(
                f"record {track_id!r}: vector holds non-finite values (NaN/Inf); it is not stored"
            )
        return vec

    def check_same(self, stored_json: str, where: str) -> None:
        """Raise :class:`SpaceMismatchError` if ``stored_json`` describes another space."""
        stored = json.loads(stored_json)
        if stored.get("hash") == self.hash:
            return
        ours = {"hash": self.hash, **self.identity()}
        diffs = _diff(stored, ours)
        detail = "; ".join(diffs[:6]) or "hash differs"
        raise SpaceMismatchError(
            f"{where} holds vectors of embedding space {stored.get('hash')} but this run "
            f"produces space {self.hash} ({detail}). Vectors of different spaces cannot be "
            f"mixed: write to another path/collection, or delete the old output to rebuild it."
        )


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            if not prefix and k in ("hash", "name"):  # labels, not identity
                continue
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += _diff(x, y, f"{prefix}{i}.")
        return out
    if a != b:
        return [f"{prefix.rstrip('.')}: stored {a!r}, now {b!r}"]
    return []
