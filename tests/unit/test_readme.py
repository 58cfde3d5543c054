"""README's quick start is the contract with a newcomer: keep it runnable and equal to CI."""

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def quickstart_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", section, re.S)]


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def first_column_codes(table_section: str) -> list[str]:
    """The `code` spans in the first column of a section's table rows."""
    rows = [line for line in table_section.splitlines() if line.startswith("| `")]
    return [code for row in rows for code in re.findall(r"`([^`]+)`", row.split(" | ")[0])]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_every_command_and_option_in_the_readmes_command_table_is_in_the_parser():
    from hybrid_engine.cli import build_parser

    commands = subparsers(build_parser())
    usages = first_column_codes(section("Command line"))
    assert len(usages) >= 20, usages
    for usage in usages:
        words = usage.split()
        parser = commands.get(words[0])
        assert parser is not None, f"README's `{usage}`: no command {words[0]!r} (have {sorted(commands)})"
        if words[1:] and words[1] in subparsers(parser):
            parser = subparsers(parser)[words[1]]
        for option in re.findall(r"--[a-z-]+", usage):
            assert option in parser._option_string_actions, f"README's `{usage}`: {words[0]} has no {option}"


def test_the_readmes_protocol_table_lists_exactly_the_types_the_host_serves():
    from hybrid_engine.hostboot import MESSAGE_TYPES

    assert sorted(first_column_codes(section("Native messaging protocol"))) == sorted(MESSAGE_TYPES)


def test_quick_start_runs_the_bundled_workflow_on_the_bundled_page():
    first = quickstart_blocks()[0]
    assert "run page-digest --input examples/sample-page.html --wait" in first
    assert (ROOT / "examples" / "sample-page.html").exists()
    assert (ROOT / "host" / "hybrid_engine" / "examples" / "page-digest.yaml").exists()


def test_ci_runs_the_test_command_the_readme_gives():
    test_block = [b for b in quickstart_blocks() if "pytest" in b][0]
    setup, command = [part.strip() for part in test_block.split("&&")]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_lines = [line.strip() for line in ci.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert setup in ci_lines
    assert command in ci_lines
    assert ci_lines.index(setup) < ci_lines.index(command)


def test_every_bench_command_in_the_readme_names_a_bench_that_exists():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    names = set(re.findall(r"`bash bench/run ([a-z_]+)`", text))
    assert names >= {"engine_overhead", "recovery_ingest", "host_startup", "chaos", "tokens", "peers"}
    runner = (ROOT / "bench" / "run").read_text(encoding="utf-8")
    for name in names:
        assert name in runner
        assert (ROOT / "bench" / (f"{name}.sh" if name == "peers" else f"{name}.py")).exists()
