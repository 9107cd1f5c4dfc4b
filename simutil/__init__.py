"""Small helpers every package of crossbar-sim may import: atomic file writes and frozen-config replacement.

Imports nothing else of crossbar-sim; it sits below `energy` in the import order.
"""

from simutil.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from simutil.configs import replace_fields

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "replace_fields"]
