"""vibe3r: a self-improvement loop for spatial intelligence."""

__version__ = "0.1.0"
