"""The documentation site builds with no warning, and its links resolve.

``mkdocs build --strict`` turns every warning into a failure: a page missing
from the nav, a relative link or an #anchor that leads nowhere (mkdocs.yml's
``validation:`` settings), a docstring the API reference cannot parse, a
snippet whose example file is gone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mkdocs.utils.yaml import yaml_load

import logshelf

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of ``config`` into ``site``, output captured."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner, not a warning
    return subprocess.run(
        [
            *(sys.executable, "-m", "mkdocs", "build", "--strict", "--clean"),
            *("--config-file", str(config), "--site-dir", str(site)),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.timeout(300)
def test_the_site_builds_strict_with_no_warning(tmp_path: Path) -> None:
    """The real site: exit 0 and not one WARNING line (warnings that strict
    mode does not count would pass unseen otherwise)."""
    done = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    output = done.stdout + done.stderr
    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert done.returncode == 0 and warnings == [], output
    for page in ("index.html", "tutorial/index.html", "reference/store/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "usage: logshelf salvage" in cli  # the generated help is there
    # Sphinx roles in docstrings are rendered as code, not printed as ":class:".
    roles = re.compile(r":(?:func|class|meth|mod|attr|exc|data|obj):")
    leaked = [
        str(page.relative_to(tmp_path))
        for page in (tmp_path / "site" / "reference").rglob("*.html")
        if roles.search(page.read_text())
    ]
    assert leaked == []


@pytest.mark.timeout(120)
def test_a_broken_link_or_anchor_fails_the_build(tmp_path: Path) -> None:
    """The site's own validation settings, on a two-page site with one broken
    link and one broken anchor: the build fails and names both."""
    settings = yaml_load((ROOT / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(
        "# Home\n\n[gone](missing.md) and [no such part](other.md#no-such-part)\n"
    )
    (docs / "other.md").write_text("# Other\n\n## A part\n")
    config = tmp_path / "mkdocs.yml"
    site = {
        "site_name": "check",
        "docs_dir": str(docs),
        "validation": settings["validation"],
        "nav": ["index.md", "other.md"],
    }
    config.write_text(json.dumps(site))  # JSON is YAML
    done = _build(config, tmp_path / "site")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "missing.md" in output and "#no-such-part" in output, output


def test_every_public_name_is_in_the_api_reference() -> None:
    """Each name of logshelf.__all__ has a ``::: logshelf.NAME`` block in
    docs/reference/ (``__version__`` is described in prose there)."""
    blocks = "\n".join(page.read_text() for page in REFERENCE.glob("*.md"))
    missing = [
        name
        for name in logshelf.__all__
        if name != "__version__" and f"::: logshelf.{name}\n" not in blocks
    ]
    assert missing == []
    assert "logshelf.__version__" in (REFERENCE / "index.md").read_text()


def test_mkdocs_is_installed_by_the_test_extra() -> None:
    """The README's test command installs the docs tools (the test extra),
    so the build above never skips."""
    assert shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is not None
