"""iqalens: vision-language image quality assessment toolkit."""

__version__ = "0.1.0"
