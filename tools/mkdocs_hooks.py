"""MkDocs hooks for the documentation site (mkdocs.yml ``hooks:``).

The pages under ``docs/`` are also read on GitHub and in a checkout, where a
relative link may point at a file outside ``docs/`` (``../benchmarks/README.md``).
MkDocs cannot resolve such a link, and ``--strict`` rightly fails on it. Rather
than rewrite those pages for the site, this hook publishes each such repository
file as a page of its own and points the links at it, so the page reads the
same in a checkout and on the site, and the link is still checked.

The docstrings the API reference is generated from are also read with
``help()`` and in editors, and some use Sphinx's roles (``:class:`Shelf```)
and its ``::`` literal-block marker. ``on_page_content`` renders those as
plain code and a colon instead of printing the role.

The command-line reference is generated the same way, from the argparse
parser itself: ``on_page_markdown`` replaces the marker ``CLI_HELP`` (in an
HTML comment) with the ``--help`` text of every command.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]

#: Files outside docs/ that pages link to: link target as written in a page at
#: the root of docs/ -> (file in the repository, the page it becomes on the site).
OUTSIDE = {
    "../benchmarks/README.md": ("benchmarks/README.md", "benchmarks-method.md"),
}


#: A Sphinx role before inline code, as Markdown renders it: ``:meth:<code>``;
#: a leading "~" in the code (Sphinx: show the last component) is dropped too.
_ROLE = re.compile(r":(?:func|class|meth|mod|attr|exc|data|obj):<code>(~[\w.]*\.)?")


def on_files(files: Files, config: Any) -> Files:
    """Add every file of ``OUTSIDE`` as a generated page, its own links to
    ``../docs/`` made relative to the site root."""
    for source, page in OUTSIDE.values():
        text = (ROOT / source).read_text(encoding="utf-8").replace("](../docs/", "](")
        files.append(File.generated(config, page, content=text))
    return files


#: Where the command-line help goes in a page.
CLI_MARKER = "<!-- CLI_HELP -->"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands of ``parser`` by name (argparse keeps them in a private
    attribute; a docs build may rely on it, the library does not)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _cli_help() -> str:
    """Markdown: one section per command, its --help text in a code block."""
    from logshelf.cli import _parser

    parts: list[str] = []

    def add(title: str, parser: argparse.ArgumentParser, level: str) -> None:
        parts.append(f"{level} `{title}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
        for name, child in _subcommands(parser).items():
            add(f"{title} {name}", child, "###" if level == "##" else level)

    # argparse wraps to the terminal's width: make it the same on every machine.
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"
    try:
        add("logshelf", _parser(), "##")
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Point links that leave docs/ at the pages ``on_files`` generated, and
    fill in the command-line help."""
    for target, (_, generated) in OUTSIDE.items():
        markdown = markdown.replace(f"]({target})", f"]({generated})")
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, _cli_help())
    return markdown


def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    """Turn the Sphinx roles and "::" markers of docstrings into plain text."""
    return _ROLE.sub("<code>", html).replace("::</p>", ":</p>")
