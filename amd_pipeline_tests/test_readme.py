"""The README tells the truth about settings and exit statuses: checked against the code, both ways."""

import re
from pathlib import Path

from amd_pipeline.core import messages

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"\b((?:WOLKVOX|AMD|DAGSTER)_[A-Z][A-Z_]*[A-Z])\b")
QUOTED = re.compile(r"[\"']((?:WOLKVOX|AMD|DAGSTER)_[A-Z][A-Z_]*[A-Z])[\"']")  # a name the code reads


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n{title}\n")
    level = title.split(" ")[0]
    following = re.search(rf"\n{level} ", text[start + len(title) + 2 :])
    return text[start : start + len(title) + 2 + following.start()] if following else text[start:]


def settings_table() -> set[str]:
    rows = [line for line in readme_section("## Settings").splitlines() if line.startswith("| `")]
    return {name for name in (line.split("`")[1] for line in rows) if NAME.fullmatch(name)}


def names_read_by_the_code() -> set[str]:
    found: set[str] = set()
    for path in [*(ROOT / "amd_pipeline").rglob("*.py"), *(ROOT / "amd_pipeline").rglob("*.yaml")]:
        found |= set(QUOTED.findall(path.read_text()))
    return found


def test_every_setting_the_code_reads_is_in_the_readme_settings_table():
    # Dagster's own switch that the CLI sets for its runs is explained where it matters (the scale figures).
    elsewhere = {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"}
    missing = names_read_by_the_code() - settings_table() - elsewhere
    assert missing == set(), f"read by the code but not in the README's Settings table: {sorted(missing)}"
    assert elsewhere <= set(NAME.findall((ROOT / "README.md").read_text()))


def test_every_setting_in_the_readme_exists():
    deploy = {m for p in (ROOT / "deploy").iterdir() for m in NAME.findall(p.read_text())}
    invented = settings_table() - names_read_by_the_code() - deploy
    assert invented == set(), f"in the README's Settings table but read nowhere: {sorted(invented)}"


def test_the_exit_statuses_table_is_the_codes():
    rows = [
        line for line in readme_section("### Errors and exit statuses").splitlines() if re.match(r"\| \d+ \|", line)
    ]
    documented = {int(line.split("|")[1]) for line in rows}
    codes = {value for name, value in vars(messages).items() if name.startswith("EXIT_")}
    assert documented == codes
