"""The package version, in the core layer so that any module can name it without importing the face."""

__version__ = "0.1.0"
