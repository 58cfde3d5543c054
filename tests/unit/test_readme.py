"""README's quick start is the contract with a newcomer: keep it runnable and equal to CI."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def quickstart_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_readme_opens_with_a_quick_start():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_heading = re.search(r"^## (.+)$", text, re.M).group(1)
    assert first_heading == "Quick start"


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
