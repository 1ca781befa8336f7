"""The manual (docs/, mkdocs.yml) and the README as its front door: every page findable, every command documented.

``mkdocs build --strict`` in ``.ci/run`` checks links and anchors between the pages; these
tests check what a build would only warn about or cannot know: that no page falls out of
the navigation, that the README links only to pages that exist and stays short, and that
the command reference covers every command the project has.
"""

import re

import yaml

from tests.helpers.readme import DOCS, README, REPO, navigation

# A front door, not the manual: what this is, one picture, the Quickstart, a tour, the way in.
README_MAX_LINES = 250
REFERENCE = DOCS / "reference"


def test_every_page_of_the_manual_has_its_place_in_the_navigation():
    on_disk = {page.relative_to(DOCS).as_posix() for page in DOCS.rglob("*.md")}
    assert on_disk - set(navigation()) == set()


def test_every_entry_of_the_navigation_names_a_page_that_exists():
    listed = navigation()
    assert [page for page in listed if not (DOCS / page).is_file()] == []
    assert len(listed) == len(set(listed)), "a page listed twice"


def test_the_readme_stays_a_front_door():
    assert len(README.read_text().splitlines()) <= README_MAX_LINES


def test_every_link_of_the_readme_names_a_file_that_exists():
    """MkDocs checks the pages' links; the README's are read on GitHub and in a clone, where nothing checks them."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [target for target in targets if not re.match(r"^[a-z]+:", target)]
    assert local and [target for target in local if not (REPO / target).exists()] == []


def documented_commands() -> set[tuple[str, str]]:
    """The (module, command) pairs the reference pages generate with mkdocs-click."""
    text = "\n".join(page.read_text() for page in REFERENCE.glob("*.md"))
    return set(re.findall(r"::: mkdocs-click\n\s+:module: (\S+)\n\s+:command: (\S+)", text))


def test_the_command_reference_covers_every_entry_point_the_registry_tools_and_the_proxy():
    entry_points = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"].values()
    expected = {(re.search(r"python -m (steps\.\w+)", spec["command"]).group(1), "main") for spec in entry_points}
    expected |= {("registry_tools.cli", "cli"), ("serving.cli", "serve")}
    assert documented_commands() == expected
