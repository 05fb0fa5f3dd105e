"""Pure: desired x actual x journal state -> Plan. No I/O, no clock, no network.

The plan is what a reviewer approves (by checksum) and what the daemon applies, so it must be a
function of its inputs only: the same inputs give the same plan, byte for byte. One module per
step, each pure:

    identity   which existing group each desired key is (journal, pinned id, name)
    usernames  which usernames need the contacts list, and what is wrong with a member list
    diff       the change each key needs, with its cause (spec or drift)
    safety     the limits that refuse a plan changing too much at once
    compute    compute_plan, running the steps in that order (compute_key_plan: a few keys)
    messages   the messages the changes would post (notify:), only for what the spec caused
    model      the values: Change, Plan, Policy, ... and the checksum (see there)
"""

from groupsync.plan.compute import compute_key_plan, compute_plan, narrow_keys
from groupsync.plan.messages import with_messages
from groupsync.plan.model import (
    FIELDS,
    Action,
    AppliedState,
    Cause,
    Change,
    FieldChange,
    GroupError,
    ManagedGroup,
    Message,
    Plan,
    Policy,
    RosterCounts,
    plan_checksum,
)
from groupsync.plan.safety import MIN_MANAGED_FOR_FRACTIONS
from groupsync.plan.usernames import usernames_to_verify

__all__ = [
    "FIELDS",
    "MIN_MANAGED_FOR_FRACTIONS",
    "Action",
    "AppliedState",
    "Cause",
    "Change",
    "FieldChange",
    "GroupError",
    "ManagedGroup",
    "Message",
    "Plan",
    "Policy",
    "RosterCounts",
    "compute_key_plan",
    "compute_plan",
    "narrow_keys",
    "plan_checksum",
    "usernames_to_verify",
    "with_messages",
]
