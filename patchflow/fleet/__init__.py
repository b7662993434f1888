"""The endpoint fleet: enrollment, agent authentication, inventories, groups, policies.

The CLI, the agent API and the admin API all call these functions, so a rule (a token's uses, a
secret kept only as a hash, an inventory replaced whole or not at all) holds whichever door a
request came through. Functions take a Session and leave committing to the caller, except the
agent hot path (`authenticate_agent`), which uses a bare connection because it runs on every poll,
and answers from the in-process cache (`agent_cache`) whenever it can.

Two hooks keep the fleet from importing the services built on it: `INVENTORY_HOOKS` (called with
endpoint ids after an inventory is committed; the scanning service registers its rescan there) and
`JOB_HANDLERS` (what the agent API's job routes call; the install engine by default).

Not re-exported, imported as modules: `inventory` (the server's inventory model), `groups` (the
subtree lookups behind "include subgroups"), `group_admin` (the console's edits of the tree),
`endpoint_view` (one endpoint's page) and `demo_fleet` (the demo's simulated endpoints).
"""

from patchflow.fleet.agent_cache import CachedAgent, forget_agents, work_changed
from patchflow.fleet.agents import (
    TOUCH_INTERVAL,
    AgentIdentity,
    Enrollment,
    agent_identity,
    authenticate_agent,
    cached_agent,
    enroll,
    load_agent,
)
from patchflow.fleet.endpoints import (
    describe_endpoint,
    get_endpoint,
    list_endpoints,
    move_endpoint,
    revoke_endpoint,
)
from patchflow.fleet.errors import Conflict, Forbidden, Stale, Unauthorized
from patchflow.fleet.group_commit import (
    store_agent_delta,
    store_agent_delta_async,
    store_agent_inventory,
    store_agent_inventory_async,
    touch_unchanged,
)
from patchflow.fleet.identity import (
    approve_all_reenrollments,
    approve_reenrollment,
    reject_reenrollment,
)
from patchflow.fleet.inventories import (
    INVENTORY_HOOKS,
    Sighting,
    body_digest,
    import_inventories,
    remember_stored,
    requested_digest,
    run_inventory_hooks,
    store_inventory,
    touch_answers,
    unchanged_ack,
    unchanged_ack_for,
    unchanged_inventory,
)
from patchflow.fleet.jobs import (
    JOB_HANDLERS,
    JobHandlers,
    caches_due,
    known_idle,
    poll_jobs,
    record_job_result,
    refresh_caches,
)
from patchflow.fleet.network import DEFAULT_INTERNAL, Network, internal_networks, is_roaming
from patchflow.fleet.policies import (
    WEEKDAYS,
    PolicyOptions,
    add_policy,
    delete_policy,
    edit_policy,
    get_policy,
    list_policies,
    policy_to_dict,
)
from patchflow.fleet.tokens import (
    admin_token_name,
    create_admin_token,
    create_enrollment_token,
    enrollment_token_to_dict,
    list_admin_tokens,
    list_enrollment_tokens,
    parse_duration,
    revoke_admin_token,
    revoke_enrollment_token,
    validate_name,
)
from patchflow.fleet.transactions import db_slot, write_transaction
from patchflow.fleet.tree import Tree, add_group, endpoint_policy, list_groups

__all__ = [
    "DEFAULT_INTERNAL",
    "INVENTORY_HOOKS",
    "JOB_HANDLERS",
    "TOUCH_INTERVAL",
    "WEEKDAYS",
    "AgentIdentity",
    "CachedAgent",
    "Conflict",
    "Enrollment",
    "Forbidden",
    "JobHandlers",
    "Network",
    "PolicyOptions",
    "Sighting",
    "Stale",
    "Tree",
    "Unauthorized",
    "add_group",
    "add_policy",
    "admin_token_name",
    "agent_identity",
    "approve_all_reenrollments",
    "approve_reenrollment",
    "authenticate_agent",
    "body_digest",
    "cached_agent",
    "caches_due",
    "create_admin_token",
    "create_enrollment_token",
    "db_slot",
    "delete_policy",
    "describe_endpoint",
    "edit_policy",
    "endpoint_policy",
    "enroll",
    "enrollment_token_to_dict",
    "forget_agents",
    "get_endpoint",
    "get_policy",
    "import_inventories",
    "internal_networks",
    "is_roaming",
    "known_idle",
    "list_admin_tokens",
    "list_endpoints",
    "list_enrollment_tokens",
    "list_groups",
    "list_policies",
    "load_agent",
    "move_endpoint",
    "parse_duration",
    "policy_to_dict",
    "poll_jobs",
    "record_job_result",
    "refresh_caches",
    "reject_reenrollment",
    "remember_stored",
    "requested_digest",
    "revoke_admin_token",
    "revoke_endpoint",
    "revoke_enrollment_token",
    "run_inventory_hooks",
    "store_agent_delta",
    "store_agent_delta_async",
    "store_agent_inventory",
    "store_agent_inventory_async",
    "store_inventory",
    "touch_answers",
    "touch_unchanged",
    "unchanged_ack",
    "unchanged_ack_for",
    "unchanged_inventory",
    "validate_name",
    "work_changed",
    "write_transaction",
]
