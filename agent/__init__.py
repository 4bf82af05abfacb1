"""dropkit: the field agent for Raspberry Pi drop kits."""

__version__ = "0.1.0"
