"""Make the plugin importable for its unit tests without installing it.

(The core's tests/test_example_plugin.py installs it for real with pip.)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
