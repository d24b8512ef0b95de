"""A text projector plugin for the tests of text search: tests/test_search.py installs it for a
subprocess (``make_fake_dist``), tests/test_serve.py registers it in the service's process."""

import hashlib

import numpy as np

from musicembed_core import TextProjector, hookimpl


class HashProjector(TextProjector):
    """Deterministic text -> vector map, tied to an encoder + chain (tests the wiring only)."""

    name = "hashproj"

    def __init__(self, encoder: str = "logmel", dim: int = 192):
        self.encoder = encoder
        self.dim = dim

    def target(self):
        return {"encoder": self.encoder,
                "enrichers": ["layers", "stats", "flatten", "l2_normalize"]}

    def embed_text(self, texts):
        out = []
        for t in texts:
            seed = int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)
            out.append(np.random.default_rng(seed).standard_normal(self.dim).astype("float32"))
        return np.stack(out)


@hookimpl
def register_text_projectors(register):
    register(HashProjector)
