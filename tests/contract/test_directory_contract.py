"""The Directory contract: one suite, run against every adapter (the fake, the policy file, Microsoft Graph
through a local server speaking its REST shapes). Each adapter is given the same groups:

    approvers: Alice, Bob, Carol        engineers: Jane, Alice        empty: nobody
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.adapters.azure.graph import GraphDirectory
from shared.adapters.embedded.policy_directory import PolicyDirectory
from shared.domain.errors import PermanentError
from shared.domain.policy import Policy
from shared.ports import Directory
from tests.azure import fake_graph
from tests.azure.fake_graph import FakeGraph, device, group, user
from tests.fakes.grants import FakeDirectory

ALICE = "aaaaaaaa-0000-4000-8000-00000000000a"
BOB = "bbbbbbbb-0000-4000-8000-00000000000b"
CAROL = "cccccccc-0000-4000-8000-00000000000c"
JANE = "dddddddd-0000-4000-8000-00000000000d"
GROUPS = {"approvers": [ALICE, BOB, CAROL], "engineers": [JANE, ALICE], "empty": []}


def fake() -> Iterator[Directory]:
    yield FakeDirectory({name: set(members) for name, members in GROUPS.items()})


def policy() -> Iterator[Directory]:
    lines = [f"  {name}: [{', '.join(members)}]" for name, members in GROUPS.items()]
    rule = "  - {name: r, match: {providers: '*', roles: '*', scopes: ['/**']}, outcome: deny, reason: never}"
    text = "\n".join(["version: 1", "groups:", *lines, "rules:", rule])
    yield PolicyDirectory(Policy.from_text(text))


def graph() -> Iterator[Directory]:
    server = FakeGraph(page_size=2)
    object_ids = {name: group(name).id for name in GROUPS}
    for name, members in GROUPS.items():
        server.groups[object_ids[name]] = [user(f"Person {m[:1]}", m) for m in members] + [device("laptop")]
        for member in members:
            server.users.setdefault(member, []).append(fake_graph.DirectoryObject(object_ids[name], name))
    directory = GraphDirectory(lambda: fake_graph.TOKEN, object_ids, base_url=server.url)
    try:
        yield directory
    finally:
        directory.close()
        server.close()


ADAPTERS: dict[str, Callable[[], Iterator[Directory]]] = {"fake": fake, "policy": policy, "graph": graph}


@pytest.fixture(params=list(ADAPTERS))
def directory(request: pytest.FixtureRequest) -> Iterator[Any]:
    yield from ADAPTERS[request.param]()


def test_groups_of_a_principal_whatever_the_case_of_its_id(directory: Directory) -> None:
    assert directory.groups_of(ALICE.upper()) == {"approvers", "engineers"}
    assert directory.groups_of(JANE) == {"engineers"}
    assert directory.groups_of("eeeeeeee-0000-4000-8000-00000000000e") == frozenset()


def test_members_of_a_group_are_its_users_and_their_number(directory: Directory) -> None:
    members = directory.members_of("approvers", 20)

    assert {person.principal_id for person in members.people} == {ALICE, BOB, CAROL}
    assert members.total == 3


def test_members_of_stops_at_the_limit_and_still_counts_everyone(directory: Directory) -> None:
    first = directory.members_of("approvers", 2)
    assert len(first.people) == 2 and first.total == 3
    assert {person.principal_id for person in first.people} <= {ALICE, BOB, CAROL}

    none = directory.members_of("approvers", 0)
    assert none.people == () and none.total == 3


def test_an_empty_group_has_no_members(directory: Directory) -> None:
    members = directory.members_of("empty", 20)
    assert members.people == () and members.total == 0


def test_a_group_the_directory_does_not_know_is_a_permanent_error(directory: Directory) -> None:
    with pytest.raises(PermanentError, match="sre-leads"):
        directory.members_of("sre-leads", 20)
