"""Failures of the fleet services that map to distinct HTTP statuses (401, 403, 409)."""

from __future__ import annotations

from patchflow.errors import UserError


class Unauthorized(UserError):
    """Missing or wrong credentials (HTTP 401)."""


class Forbidden(UserError):
    """Known credentials that may not be used: revoked, expired, used up (HTTP 403)."""


class Conflict(UserError):
    """The request clashes with stored state, e.g. a host name taken by another agent (409)."""


class Stale(UserError):
    """A change against a state that is not the stored one: the precondition failed (412)."""
