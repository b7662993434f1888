"""Errors a user can act on. Entry points print their message as one line and exit non-zero."""


class UserError(Exception):
    """Bad input or a state the user must change; the message is one line."""


class NotFoundError(UserError):
    """A named thing (patch server, endpoint, patch, job) does not exist."""
