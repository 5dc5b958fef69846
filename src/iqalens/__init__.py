"""iqalens: vision-language image quality assessment toolkit."""

from iqalens.version import __version__

__all__ = ["__version__"]
