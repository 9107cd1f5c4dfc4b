"""The adaptation methods of DESIGN section 5; importing this package registers them in `fusion.registry.METHODS`."""

from fusion.methods import fused_methods, lora_methods, mixing_methods

__all__ = ["fused_methods", "lora_methods", "mixing_methods"]
