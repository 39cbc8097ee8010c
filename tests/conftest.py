from __future__ import annotations

import sys
from pathlib import Path

# Let test modules import the shared helpers (vectors.py, netsim.py) by name.
sys.path.insert(0, str(Path(__file__).parent))
