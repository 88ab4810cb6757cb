"""README.md keeps its two-command quick start, links only files that exist, and its configuration tables are the
ones the settings code generates (every variable read is listed, and nothing else)."""

from __future__ import annotations

import re

from tests.kit import config_table, support

README = support.ROOT / "README.md"


def test_the_quick_start_is_the_two_commands() -> None:
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick.split("```bash", 1)[1].split("```", 1)[0].splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
    makefile = (support.ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_the_configuration_tables_are_generated_from_the_settings_code() -> None:
    assert config_table.readme_block() == config_table.render(), (
        "README.md's configuration tables are stale: run `.venv/bin/python -m tests.kit.config_table --write`")


def test_the_configuration_tables_list_exactly_the_variables_the_code_reads() -> None:
    listed = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", config_table.readme_block(), re.M))
    cli = {name for name, _, _ in support.documented_fields(config_table.CLI_SETTINGS)}
    read = support.service_env_names() | support.trainer_env_names() | set(support.LIBRARY_ENV) | cli
    assert listed == read, f"not listed: {sorted(read - listed)}; listed but not read: {sorted(listed - read)}"


def test_every_relative_link_points_to_a_file_that_exists() -> None:
    links = re.findall(r"\]\(([^)#]+)\)", README.read_text())
    assert links
    for link in links:
        if "://" not in link:
            assert (support.ROOT / link).exists(), link


def test_the_architecture_names_every_service() -> None:
    picture = README.read_text().split("## Architecture", 1)[1].split("```", 2)[1]
    for word in ("api", "worker", "beat", "flower", "Redis", "kubernetes", "local", "trainer", "PyTorchJob"):
        assert word in picture, word
