"""The README and docs/ tell the truth: settings and exit statuses against the code, both ways; every
relative link and image resolves, anchors included; the README stays a page a newcomer reads."""

import re
from pathlib import Path

import pytest

from amd_pipeline.core import messages

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"\b((?:WOLKVOX|AMD|DAGSTER)_[A-Z][A-Z_]*[A-Z])\b")
QUOTED = re.compile(r"[\"']((?:WOLKVOX|AMD|DAGSTER)_[A-Z][A-Z_]*[A-Z])[\"']")  # a name the code reads
SETTINGS_PAGE = "docs/operating.md"  # the one Settings table
EXITS_PAGE = "docs/operating.md"  # the one exit statuses table
README_MAX_LINES = 250


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def section(page: str, title: str, root: Path = ROOT) -> str:
    """The text of the section headed exactly ``title`` (``## Settings``) in ``page``, up to the next
    heading of the same or a higher level. Raises ValueError naming the page when it has no such heading."""
    text = (root / page).read_text()
    lines = text.split("\n")
    level = len(title) - len(title.lstrip("#"))
    try:
        start = lines.index(title)
    except ValueError:
        raise ValueError(f"{page} has no heading {title!r}") from None
    end = len(lines)
    for i in range(start + 1, len(lines)):
        m = re.match(r"(#+) ", lines[i])
        if m and len(m.group(1)) <= level:
            end = i
            break
    return "\n".join(lines[start:end])


def settings_table(root: Path = ROOT) -> set[str]:
    rows = [line for line in section(SETTINGS_PAGE, "## Settings", root).splitlines() if line.startswith("| `")]
    return {name for name in (line.split("`")[1] for line in rows) if NAME.fullmatch(name)}


def names_read_by_the_code() -> set[str]:
    found: set[str] = set()
    for path in [*(ROOT / "amd_pipeline").rglob("*.py"), *(ROOT / "amd_pipeline").rglob("*.yaml")]:
        found |= set(QUOTED.findall(path.read_text()))
    return found


def names_in_deploy() -> set[str]:
    return {m for p in (ROOT / "deploy").iterdir() for m in NAME.findall(p.read_text())}


def missing_settings(root: Path = ROOT) -> set[str]:
    # Dagster's own switch that the CLI sets for its runs is explained where it matters (the scale figures).
    elsewhere = {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"}
    return names_read_by_the_code() - settings_table(root) - elsewhere


def invented_settings(root: Path = ROOT) -> set[str]:
    return settings_table(root) - names_read_by_the_code() - names_in_deploy()


def documented_exit_statuses(root: Path = ROOT) -> set[int]:
    rows = [
        line
        for line in section(EXITS_PAGE, "## Errors and exit statuses", root).splitlines()
        if re.match(r"\| \d+ \|", line)
    ]
    return {int(line.split("|")[1]) for line in rows}


# --- links ---------------------------------------------------------------------------------------

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def prose(text: str) -> str:
    """``text`` with fenced code blocks and inline code blanked out, line numbers kept."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line.strip()):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    return INLINE_CODE.sub(lambda m: "\n" * m.group(0).count("\n"), "\n".join(lines))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text as rendered, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in ``page``, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    fenced = False
    for line in page.read_text().split("\n"):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        m = re.match(r"#{1,6} (.+?)\s*#*\s*$", line)
        if m and not fenced:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            found.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return found


def broken_links(pages: list[Path], root: Path = ROOT) -> list[str]:
    """Every relative link or image in ``pages`` whose file, or whose ``#anchor`` in a Markdown file,
    does not exist, as ``page:line: target (why)``. External links (a scheme, ``mailto:``) are skipped."""
    broken = []
    for page in pages:
        text = prose(page.read_text())
        for match in LINK.finditer(text):  # a link's text may run over two lines
            target, number = match.group(1), text.count("\n", 0, match.start()) + 1
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
                continue
            path_part, _, anchor = target.partition("#")
            where = f"{page.relative_to(root)}:{number}: {target}"
            resolved = (page.parent / path_part).resolve() if path_part else page
            if not resolved.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{where} (no heading with that anchor)")
    return broken


# --- the tests -------------------------------------------------------------------------------------


def test_every_setting_the_code_reads_is_in_the_settings_table():
    missing = missing_settings()
    assert missing == set(), f"read by the code but not in {SETTINGS_PAGE}'s Settings table: {sorted(missing)}"
    docs_text = "\n".join(p.read_text() for p in doc_pages())
    assert "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS" in docs_text


def test_every_setting_in_the_settings_table_exists():
    invented = invented_settings()
    assert invented == set(), f"in {SETTINGS_PAGE}'s Settings table but read nowhere: {sorted(invented)}"


def test_the_exit_statuses_table_is_the_codes():
    codes = {value for name, value in vars(messages).items() if name.startswith("EXIT_")}
    assert documented_exit_statuses() == codes


def test_each_table_lives_in_one_place():
    """The Settings and exit statuses tables exist once, on their page: no second copy to drift."""
    for title in ("## Settings", "## Errors and exit statuses", "### Errors and exit statuses"):
        holders = [p.name for p in doc_pages() if title in p.read_text().split("\n")]
        assert holders == (["operating.md"] if title.startswith("## ") else []), (title, holders)


def test_every_relative_link_and_image_resolves():
    pages = doc_pages()
    assert len(pages) >= 6, [p.name for p in pages]  # the README and the five pages per reader at least
    assert broken_links(pages) == []


REFERENCE = re.compile(r"(docs/\w+\.md),? \"([^\"]+)\"")  # docs/performance.md, "Speed" in a comment


def dangling_references(files: list[Path]) -> list[str]:
    """Every ``docs/page.md, "Heading"`` that a comment in the code or deploy/ names and that does not exist."""
    dangling = []
    for path in files:
        for page, heading in REFERENCE.findall(path.read_text()):
            target = ROOT / page
            if not target.exists() or slug(heading) not in anchors(target):
                dangling.append(f"{path.relative_to(ROOT)}: {page}, {heading!r}")
    return dangling


def test_every_docs_section_the_code_and_deploy_point_at_exists():
    files = [p for p in [*(ROOT / "amd_pipeline").rglob("*"), *(ROOT / "deploy").iterdir()] if p.is_file()]
    files = [p for p in files if p.suffix in {".py", ".yaml", ".service", ".example"}]
    assert sum(len(REFERENCE.findall(p.read_text())) for p in files) >= 8  # the comments that point at docs/
    assert dangling_references(files) == []
    assert "README" not in "".join(p.read_text() for p in files)  # a section that moved to docs/


# A file (with an extension) or a folder (with a trailing /) of the repository; not a tag like amd_pipeline/source,
# not an absolute path like /opt/amd_pipeline/data.
CODE_PATH = re.compile(
    r"(?<![\w/.])((?:amd_pipeline|amd_pipeline_tests|bench|deploy)/(?:[\w.-]+/)*(?:[\w-]+\.\w+)?)(?![\w/])"
)
# The sub-packages the package move of issue 15 creates; until it lands they are named, not checked.
AFTER_THE_MOVE = ("amd_pipeline/core/", "amd_pipeline/defs/", "amd_pipeline/cli/", "amd_pipeline/wolkvox/simulator.py")
AFTER_THE_MOVE += ("amd_pipeline/wolkvox/windows.py",)


def missing_code_paths(pages: list[Path], root: Path = ROOT) -> list[str]:
    """Every repository path (``amd_pipeline/...``, ``bench/...``, ``deploy/...``) a page names in code text
    that does not exist: a module that moved leaves no stale name behind."""
    moved = (root / "amd_pipeline" / "core").is_dir()
    missing = []
    for page in pages:
        for number, line in enumerate(page.read_text().split("\n"), 1):
            for span in re.findall(r"`([^`]+)`", line):
                for path in CODE_PATH.findall(span):
                    if "*" in span or (not moved and path.startswith(AFTER_THE_MOVE)):
                        continue
                    if not (root / path).exists():
                        missing.append(f"{page.relative_to(root)}:{number}: {path}")
    return missing


def test_every_code_path_the_docs_name_exists():
    assert missing_code_paths(doc_pages()) == []


def test_the_readme_is_a_five_minute_read():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


# --- the checks can fail (controls, on copies in a temporary folder) --------------------------------


def test_slug_is_githubs():
    assert slug("Measured at an operation's scale") == "measured-at-an-operations-scale"
    assert slug("What the vendor leaves unknown, and how it is handled") == (
        "what-the-vendor-leaves-unknown-and-how-it-is-handled"
    )
    assert slug("`amd_pipeline/wolkvox/`: the vendor boundary") == "amd_pipelinewolkvox-the-vendor-boundary"
    assert slug("A spreadsheet (Excel, LibreOffice, Google Sheets), Power BI") == (
        "a-spreadsheet-excel-libreoffice-google-sheets-power-bi"
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The README and docs/ (Markdown and images) in a temporary folder, plus the files the docs link to."""
    (tmp_path / "docs").mkdir()
    for page in doc_pages():
        (tmp_path / page.relative_to(ROOT)).write_text(page.read_text())
    for other in (ROOT / "docs").iterdir():
        if other.suffix != ".md":
            (tmp_path / "docs" / other.name).write_bytes(other.read_bytes())
    for linked in ("amd_pipeline/dagster.yaml", "deploy/dagster.yaml", "amd_pipeline/core/portable.py", "tasks.py"):
        (tmp_path / linked).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / linked).write_text((ROOT / linked).read_text())
    return tmp_path


def test_control_a_broken_link_a_missing_image_and_a_wrong_anchor_fail(copy: Path):
    pages = [copy / "README.md", *sorted((copy / "docs").glob("*.md"))]
    assert broken_links(pages, copy) == []
    readme = copy / "README.md"
    readme.write_text(
        readme.read_text()
        + "\n[gone](docs/nowhere.md) ![gone](docs/nothing.png) [bad anchor](docs/operating.md#no-such-heading)"
        + " [same page](#no-such-section) `[in code](docs/ignored.md)` [external](https://example.com/x)\n"
        + "a link over [two\nlines](docs/split.md)\n```\n[in a fence](docs/fenced.md)\n```\n"
    )
    broken = broken_links(pages, copy)
    assert [b.split(": ", 1)[1] for b in broken] == [
        "docs/nowhere.md (no such file)",
        "docs/nothing.png (no such file)",
        "docs/operating.md#no-such-heading (no heading with that anchor)",
        "#no-such-section (no heading with that anchor)",
        "docs/split.md (no such file)",
    ]


def test_control_a_deleted_or_invented_settings_row_fails(copy: Path):
    page = copy / SETTINGS_PAGE
    text = page.read_text()
    row = next(line for line in text.split("\n") if line.startswith("| `AMD_BATCH_SIZE` |"))
    page.write_text(text.replace(row + "\n", ""))
    assert missing_settings(copy) == {"AMD_BATCH_SIZE"}
    page.write_text(text.replace(row, row + "\n| `AMD_INVENTED_SETTING` | `1` | read nowhere |"))
    assert invented_settings(copy) == {"AMD_INVENTED_SETTING"}


def test_control_a_changed_exit_status_fails(copy: Path):
    page = copy / EXITS_PAGE
    codes = {value for name, value in vars(messages).items() if name.startswith("EXIT_")}
    assert documented_exit_statuses(copy) == codes
    page.write_text(page.read_text().replace("\n| 4 | stopped by", "\n| 5 | stopped by"))
    assert documented_exit_statuses(copy) != codes


def test_control_a_moved_module_fails(copy: Path):
    (copy / "amd_pipeline").mkdir(exist_ok=True)
    page = copy / "docs" / "analysts.md"
    page.write_text(page.read_text() + "\nSee `amd_pipeline/nowhere.py` and `bench/gone.py`.\n")
    found = [m.split(": ", 1)[1] for m in missing_code_paths([page], copy)]
    assert "amd_pipeline/nowhere.py" in found and "bench/gone.py" in found
