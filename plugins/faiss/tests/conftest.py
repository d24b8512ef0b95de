"""Make the plugin importable for its tests without installing it (the e2e test needs it installed)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
