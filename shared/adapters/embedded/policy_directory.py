"""The local directory: group membership as written in the policy file's `groups`."""

from __future__ import annotations

from ...domain.errors import PermanentError
from ...domain.policy import Policy
from ...ports import Members, Person


class PolicyDirectory:
    """Implements the Directory port from the policy's groups (principal ids compared case-insensitively).
    The policy names people by object id only, so its members have no display name."""

    def __init__(self, policy: Policy) -> None:
        membership: dict[str, set[str]] = {}
        self._members: dict[str, tuple[Person, ...]] = {}
        for group, members in policy.groups.items():
            ids = sorted({member.lower() for member in members})  # the policy's groups are sets: a stable order
            self._members[group] = tuple(Person(principal_id) for principal_id in ids)
            for member in ids:
                membership.setdefault(member, set()).add(group)
        self._membership = {principal: frozenset(groups) for principal, groups in membership.items()}

    def groups_of(self, principal_id: str) -> frozenset[str]:
        return self._membership.get(principal_id.lower(), frozenset())

    def members_of(self, group: str, limit: int) -> Members:
        if group not in self._members:
            raise PermanentError(f"the policy has no group {group}")
        members = self._members[group]
        return Members(members[: max(limit, 0)], len(members))
