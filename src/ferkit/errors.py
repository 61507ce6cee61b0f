"""ferkit's own error types: the CLI turns these, and only these, into a one-line message and exit status 1.

Every error a user can cause (a bad file, a bad recipe, a missing extra) is a ``FerkitError``; anything else is a
bug and keeps its traceback. The subclasses also derive from the builtin type callers already catch
(``ValueError``, ``ImportError``), so library users' ``except ValueError`` keeps working.
"""

from __future__ import annotations


class FerkitError(Exception):
    """Base of every error ferkit raises on purpose; its message is one line that says what to do."""


class UserInputError(FerkitError, ValueError):
    """A bad argument, file or setting given by the user."""


class MissingExtraError(FerkitError, ImportError):
    """An optional dependency is not installed; the message names the pip command that installs it."""


def missing_extra(extra: str, what: str) -> MissingExtraError:
    """The error for ``what`` needing ``pip install "ferkit[extra]"`` (``pip install -e ".[extra]"`` from a clone)."""
    return MissingExtraError(f"{what} needs the '{extra}' extra: pip install \"ferkit[{extra}]\" "
                             f"(from a source checkout: pip install -e \".[{extra}]\")")
