"""Small helpers every package of crossbar-sim may import: atomic file writes, frozen-config replacement and
JSON-safe values.

Imports nothing else of crossbar-sim; it sits below `energy` in the import order.
"""

from simutil.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from simutil.configs import replace_fields
from simutil.jsonvalues import finite_json, plain_json

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "finite_json", "plain_json", "replace_fields"]
