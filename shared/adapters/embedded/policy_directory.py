"""The local directory: group membership as written in the policy file's `groups`."""

from __future__ import annotations

from ...domain.policy import Policy


class PolicyDirectory:
    """Implements the Directory port from the policy's groups (principal ids compared case-insensitively)."""

    def __init__(self, policy: Policy) -> None:
        membership: dict[str, set[str]] = {}
        for group, members in policy.groups.items():
            for member in members:
                membership.setdefault(member.lower(), set()).add(group)
        self._membership = {principal: frozenset(groups) for principal, groups in membership.items()}

    def groups_of(self, principal_id: str) -> frozenset[str]:
        return self._membership.get(principal_id.lower(), frozenset())
