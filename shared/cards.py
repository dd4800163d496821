"""Notices rendered for people: a Microsoft Teams message carrying an Adaptive Card (the body a Teams
Workflows webhook accepts) and a one-line text form for consoles. Pure functions, no SDK.

What Teams needs of such a card (sources in docs/teams.md):
- the outgoing webhook hears a message only when it is @mentioned, so the card names it and shows the exact
  line to type;
- people are @mentioned with `<at>name</at>` in a TextBlock and a `msteams.entities` mention whose id is their
  Entra object id (the form Teams documents for cards posted by webhooks);
- `Action.OpenUrl` is the one action such a card can carry: it opens the request's page in the portal.
"""

from __future__ import annotations

from typing import Any

from .ports import Notice, Person
from .text import listed

ADAPTIVE_CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
ADAPTIVE_CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
# NB. 1.4 rather than 1.5: every Teams client (mobile included) and the Workflows "post card" action
# render 1.4, and this card needs nothing newer.
ADAPTIVE_CARD_VERSION = "1.4"
PORTAL_NAME = "Backstage"

# NB. Only Default and Accent: in Teams' own host configs they keep at least 4.5:1 contrast on both the light
# and the dark theme. Good (#92c353) and Warning (#f8d22a) are unreadable on the light theme's white, Attention
# falls to about 3:1 on the dark theme, Light and Dark vanish on one theme each. The title's words carry the
# outcome; the colour only marks the notices that ask someone to act.
_ACCENT_KINDS = frozenset({"approval_requested", "break_glass", "failed", "revoke_failed"})


def title_color(kind: str) -> str:
    """The title colour of a notice kind: Accent when people must act, Default otherwise."""
    return "Accent" if kind in _ACCENT_KINDS else "Default"


def teams_message(notice: Notice) -> dict[str, Any]:
    """The JSON body to POST to a Teams Workflows webhook."""
    return {
        "type": "message",
        "attachments": [
            {"contentType": ADAPTIVE_CARD_CONTENT_TYPE, "contentUrl": None, "content": adaptive_card(notice)}
        ],
    }


def adaptive_card(notice: Notice) -> dict[str, Any]:
    """Title, request id, a FactSet of the notice's facts, who is asked (@mentioned), the exact replies, and a
    button to the request's page."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": _defuse_links(notice.title),
            "size": "Medium",
            "weight": "Bolder",
            "color": title_color(notice.kind),
            "wrap": True,
        },
        {"type": "TextBlock", "text": f"Request {notice.request_id}", "isSubtle": True, "spacing": "None",
         "wrap": True},
    ]
    if notice.facts:
        facts = [{"title": _label(k), "value": _defuse_links(v)} for k, v in notice.facts.items()]
        body.append({"type": "FactSet", "facts": facts})
    mentions = _mention_texts(notice.mentions)
    if notice.audience:
        body.append({"type": "TextBlock", "text": "Approvers: " + _approvers(notice, mentions), "wrap": True})
    if notice.reply_hints:
        body.extend(_replies(notice))
    msteams: dict[str, Any] = {"width": "Full"}
    if mentions:
        msteams["entities"] = [
            {"type": "mention", "text": text, "mentioned": {"id": person.principal_id, "name": _name(person)}}
            for person, text in mentions
        ]
    card: dict[str, Any] = {
        "$schema": ADAPTIVE_CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": ADAPTIVE_CARD_VERSION,
        "fallbackText": render_text(notice),
        "msteams": msteams,
        "body": body,
    }
    if notice.link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": f"Open in {PORTAL_NAME}", "url": notice.link}]
    return card


def render_text(notice: Notice) -> str:
    """One short line for a console or log: kind, request id, title and the replies to type."""
    line = f"[jitgate] {notice.kind} {notice.request_id}: {notice.title}"
    if notice.reply_hints:
        line += " | reply: " + " / ".join(_typed(notice, hint) for hint in notice.reply_hints)
    return " ".join(line.split())  # one line, even when a title or hint carries a newline


def _approvers(notice: Notice, mentions: list[tuple[Person, str]]) -> str:
    """`<at>Alice</at>, <at>Bob</at> and 12 more in platform-approvers`, or the groups when nobody is known."""
    if not mentions:
        return "members of " + listed(notice.audience)
    more = [f"{n} more in {group}" for group, n in notice.unmentioned.items()]
    return listed([text for _, text in mentions] + more)


def _replies(notice: Notice) -> list[dict[str, Any]]:
    lines = {
        "type": "Container",
        "style": "emphasis",
        # TextRuns are never read as markdown, so placeholders such as `<reason>` and `[comment]` show
        # exactly as typed instead of being swallowed as HTML or link syntax.
        "items": [
            {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": _typed(notice, hint),
                                                   "fontType": "Monospace"}]}
            for hint in notice.reply_hints
        ],
    }
    if not notice.answer_to:
        return [{"type": "TextBlock", "text": "Reply in this channel with one of:", "weight": "Bolder",
                 "spacing": "Medium", "wrap": True}, lines]
    name = notice.answer_to
    return [
        {"type": "TextBlock", "text": "To answer, reply in this channel with one of these lines:", "weight": "Bolder",
         "spacing": "Medium", "wrap": True},
        lines,
        {"type": "TextBlock", "isSubtle": True, "wrap": True,
         "text": f"Type @{name} and pick {name} from the list so that it becomes a mention: Teams passes {name} "
                 f"only the messages that @mention it."},
    ]


def _typed(notice: Notice, hint: str) -> str:
    """The exact line to type: the outgoing webhook's @mention, then the command."""
    return f"@{notice.answer_to} {hint}" if notice.answer_to else hint


def _mention_texts(people: list[Person]) -> list[tuple[Person, str]]:
    """Each person with the `<at>…</at>` text that mentions them; a name shared by two people is numbered so
    that every mention text is unique."""
    texts: list[tuple[Person, str]] = []
    used: set[str] = set()
    for person in people:
        base = _name(person)
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base} ({n})"
        used.add(name)
        texts.append((person, f"<at>{name}</at>"))
    return texts


def _name(person: Person) -> str:
    """The display name, fit for `<at>…</at>`; the policy file and a Graph answer without the name give none,
    so the start of the object id stands in (enough to find the person in the policy or in Entra)."""
    name = " ".join(person.display_name.replace("<", "").replace(">", "").split())
    return _defuse_links(name) if name else f"{person.principal_id[:8]}…"


def _label(name: str) -> str:
    return name[:1].upper() + name[1:]


def _defuse_links(text: str) -> str:
    # NB. Titles and fact values carry requester-written text (justification, ticket) that Teams
    # renders as markdown; `[INC-4711](https://evil.example)` would show approvers a trusted-looking
    # link. An invisible zero-width space between `]` and `(` keeps the text but breaks the link.
    return text.replace("](", "]\u200b(")
