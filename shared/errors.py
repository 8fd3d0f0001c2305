"""The one error type for problems the user can fix.

``UserError`` names what is wrong with what the user gave (a setting, a file, a request) and
what to do about it. The CLI prints it as one line (exit status 2); the service answers it
with a 4xx carrying the message. Any other exception is a bug: the CLI shows its traceback,
the service answers 500 with a request id and logs the traceback under that id.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the input, explained in the message. A ``ValueError`` so that pydantic
    validators may raise it and callers that catch ``ValueError`` keep working."""
