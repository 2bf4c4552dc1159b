"""The wheel's version, in a module of its own so every other module can read it without cycles.

Hatch reads it from here when building the wheel (``[tool.hatch.version]`` in pyproject.toml).
"""

__version__ = "0.2.0"
