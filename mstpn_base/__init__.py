"""Base layer: user-facing error types, atomic file I/O, signal handling and the backend registry.
Imports nothing else of the project."""

__version__ = "0.1.0"
