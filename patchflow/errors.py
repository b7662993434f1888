"""Errors a user can act on. Entry points print their message as one line and exit non-zero."""


class UserError(Exception):
    """Bad input or a state the user must change; the message is one line."""


class NotFoundError(UserError):
    """A named thing (patch server, endpoint, patch, job) does not exist."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line for a stored message or a log line (a driver's error spans
    several): its text with every run of blanks made one space, else its type's name."""
    return (" ".join(str(exc).split()) or type(exc).__name__)[:limit]
