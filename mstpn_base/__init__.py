"""Base layer: user-facing error types and atomic file I/O. Imports nothing else of the project."""
