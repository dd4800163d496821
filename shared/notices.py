"""Who hears a notice, how they answer it, and where they read more.

The lifecycle says what happened, to whose request, and which approver groups it concerns; `AddressedNotifier`
completes the notice before any adapter renders it: the members of those groups to @mention (from the Directory,
at most `max_mentions`, never the requester), the name of the Teams outgoing webhook people @mention to answer,
and the link to the request's page in the portal.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from .ports import Directory, Members, Notice, Notifier, Person

log = logging.getLogger("jitgate.notices")

MAX_MENTIONS = 20
PORTAL_PATH = "/jitgate/requests/"


def request_page(portal_url: str, request_id: str) -> str:
    """The portal page of a request (`<portal>/jitgate/requests/<id>`); '' when no portal is configured."""
    return f"{portal_url.rstrip('/')}{PORTAL_PATH}{request_id}" if portal_url else ""


class AddressedNotifier:
    """A Notifier that adds mentions, the outgoing webhook's name and the portal link, then hands the notice on.

    NB. The directory is asked only for notices with an audience. If it fails, the notice still goes out, without
    mentions (the card then names the groups), and the failure is logged: people hearing late is better than
    not at all.
    """

    def __init__(
        self,
        inner: Notifier,
        directory: Directory,
        *,
        answer_to: str = "",
        portal_url: str = "",
        max_mentions: int = MAX_MENTIONS,
    ) -> None:
        self.inner = inner
        self.directory = directory
        self.answer_to = answer_to
        self.portal_url = portal_url
        self._max = max_mentions

    def notify(self, notice: Notice) -> None:
        mentions, unmentioned = self._addressees(notice) if notice.audience else ([], {})
        self.inner.notify(
            replace(
                notice,
                mentions=mentions,
                unmentioned=unmentioned,
                answer_to=notice.answer_to or self.answer_to,
                link=notice.link or request_page(self.portal_url, notice.request_id),
            )
        )

    def _addressees(self, notice: Notice) -> tuple[list[Person], dict[str, int]]:
        """Up to `max_mentions` distinct people across the audience groups, in group order, never the requester
        (who cannot approve their own request), and for each group how many of its other members are not among
        them."""
        requester = notice.requester.lower()
        read = self._max + 1 if requester else self._max  # the requester may be one of a group's first
        try:
            groups = {group: self.directory.members_of(group, read) for group in notice.audience}
        except Exception as exc:
            log.warning("notice %s for %s goes out without mentions: the directory failed: %s",
                        notice.kind, notice.request_id, exc)
            return [], {}
        chosen: dict[str, Person] = {}
        for members in groups.values():
            for person in members.people:
                if len(chosen) < self._max and person.principal_id.lower() != requester:
                    chosen.setdefault(person.principal_id.lower(), person)
        left_out = {group: _left_out(members, chosen, requester) for group, members in groups.items()}
        return list(chosen.values()), {group: n for group, n in left_out.items() if n > 0}


def _left_out(members: Members, chosen: dict[str, Person], requester: str) -> int:
    # NB. Only the members read count as mentioned: someone mentioned through another group who is beyond this
    # group's first `max_mentions` is counted among its "more" (a count off by the overlap, never a missed group).
    # The same holds for a requester beyond them.
    return members.total - sum(1 for person in members.people if person.principal_id.lower() in chosen
                               or person.principal_id.lower() == requester)
