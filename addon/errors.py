"""One error type for everything the add-on reports to the user: what went wrong and how to fix it."""

from __future__ import annotations


class AddonError(Exception):
    """A problem the user can act on. ``message`` says what happened, ``hint`` what to do.

    ``code`` mirrors the backend's error codes (``track4dgen.job.JobError``) so an error that
    came from the backend keeps its machine-readable name in the panel and in batch logs.
    """

    def __init__(self, message: str, hint: str = "", code: str = "addon_error") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
