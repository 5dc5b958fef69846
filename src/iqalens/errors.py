"""The errors a user can fix, as one family.

The command line maps every :class:`IqalensError` to one line on stderr and exit status 2 (with
``iqalens --debug`` it prints the traceback too); any other exception is a bug and ends with a
traceback and exit status 1. Library code therefore raises an :class:`IqalensError` subclass for
bad input, bad configuration or an unknown name, and lets everything else propagate.

The subclasses also derive from the built-in exception a caller would have caught before this
family existed (``ValueError``, ``KeyError``), so ``except ValueError`` in user code keeps working.
"""

from __future__ import annotations

__all__ = ["ConfigError", "InvalidInputError", "IqalensError", "UnknownNameError"]


class IqalensError(Exception):
    """Base of every error caused by the user's input, files or settings (exit status 2)."""


class InvalidInputError(IqalensError, ValueError):
    """A value, file or argument that cannot be used as given (the message names it)."""


class ConfigError(InvalidInputError):
    """A configuration (options, a saved config file, a combination of settings) that is invalid."""


class UnknownNameError(IqalensError, KeyError):
    """A name that no registry knows (the message lists the names that exist)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""
