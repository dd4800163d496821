"""Notices rendered for people: a Microsoft Teams message carrying an Adaptive Card (the body a Teams
Workflows webhook accepts) and a one-line text form for consoles. Pure functions, no SDK."""

from __future__ import annotations

from typing import Any

from .ports import Notice

ADAPTIVE_CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
ADAPTIVE_CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
# NB. 1.4 rather than 1.5: every Teams client (mobile included) and the Workflows "post card" action
# render 1.4, and this card needs nothing newer.
ADAPTIVE_CARD_VERSION = "1.4"

_TITLE_COLORS = {
    "approval_requested": "Accent",
    "break_glass": "Attention",
    "approved": "Good",
    "granted": "Good",
    "denied": "Attention",
    "failed": "Attention",
    "revoke_failed": "Attention",
    "expired": "Warning",
    "revoked": "Default",
}


def teams_message(notice: Notice) -> dict[str, Any]:
    """The JSON body to POST to a Teams Workflows webhook."""
    return {
        "type": "message",
        "attachments": [
            {"contentType": ADAPTIVE_CARD_CONTENT_TYPE, "contentUrl": None, "content": adaptive_card(notice)}
        ],
    }


def adaptive_card(notice: Notice) -> dict[str, Any]:
    """Title, request id, a FactSet of the notice's facts and, when people must answer, the exact replies."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": _defuse_links(notice.title),
            "size": "Medium",
            "weight": "Bolder",
            "color": _TITLE_COLORS.get(notice.kind, "Default"),
            "wrap": True,
        },
        {"type": "TextBlock", "text": f"Request {notice.request_id}", "isSubtle": True, "spacing": "None",
         "wrap": True},
    ]
    if notice.facts:
        facts = [{"title": _label(k), "value": _defuse_links(v)} for k, v in notice.facts.items()]
        body.append({"type": "FactSet", "facts": facts})
    if notice.audience:
        approvers = "Approvers: " + ", ".join(notice.audience)
        body.append({"type": "TextBlock", "text": approvers, "isSubtle": True, "wrap": True})
    if notice.reply_hints:
        body.append({"type": "TextBlock", "text": "Reply in this channel with one of:", "weight": "Bolder",
                     "spacing": "Medium", "wrap": True})
        # TextRuns are never read as markdown, so placeholders such as `<reason>` and `[comment]` show
        # exactly as typed instead of being swallowed as HTML or link syntax.
        body.append({
            "type": "Container",
            "style": "emphasis",
            "items": [
                {
                    "type": "RichTextBlock",
                    "inlines": [{"type": "TextRun", "text": hint, "fontType": "Monospace"}],
                }
                for hint in notice.reply_hints
            ],
        })
    return {
        "$schema": ADAPTIVE_CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": ADAPTIVE_CARD_VERSION,
        "fallbackText": render_text(notice),
        "msteams": {"width": "Full"},
        "body": body,
    }


def render_text(notice: Notice) -> str:
    """One short line for a console or log: kind, request id, title and the replies to type."""
    line = f"[jitgate] {notice.kind} {notice.request_id}: {notice.title}"
    if notice.reply_hints:
        line += " | reply: " + " / ".join(notice.reply_hints)
    return " ".join(line.split())  # one line, even when a title or hint carries a newline


def _label(name: str) -> str:
    return name[:1].upper() + name[1:]


def _defuse_links(text: str) -> str:
    # NB. Titles and fact values carry requester-written text (justification, ticket) that Teams
    # renders as markdown; `[INC-4711](https://evil.example)` would show approvers a trusted-looking
    # link. An invisible zero-width space between `]` and `(` keeps the text but breaks the link.
    return text.replace("](", "]\u200b(")
