"""The error types the command line reports as one line (``error: ...``, exit 2), not a traceback.

:class:`UserError` is a mistake the user can fix (a flag, a file, a setting); it subclasses
``ValueError`` so that code catching ``ValueError`` keeps working. Anything else that escapes
is a bug and keeps its traceback. Set ``ENTROPY_LENS_DEBUG=1`` to see tracebacks for user errors too.
"""

from __future__ import annotations

__all__ = ["UserError", "LensResolutionError", "RunInterrupted", "ResultsFileError", "ModelNotFoundError"]


class UserError(ValueError):
    """A mistake the user can fix; the message says what is wrong and how to fix it."""


class LensResolutionError(RuntimeError):
    """The lens could not be resolved, or does not reproduce the model's own logits."""


class RunInterrupted(RuntimeError):
    """The run was stopped by a signal after saving what was complete."""


class ResultsFileError(UserError):
    """A results file is missing, unreadable or not in a known format."""


class ModelNotFoundError(UserError):
    """A model name could not be resolved to weights (the message says what was tried)."""
