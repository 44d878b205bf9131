"""Where the harness finds the module under test: the repository and ``DTCSegmentation/DTCSegmentation.py``.

A leaf (it imports nothing of the harness), so every harness file can name the module without an import cycle.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE_FILE = REPO / "DTCSegmentation" / "DTCSegmentation.py"
