"""The repository's address: read from one place, stamped into every notebook, restamped for a fork.

Its home is ``[project.urls] Repository`` in ``pyproject.toml``; each notebook carries it where Colab needs it
before the package exists: the "Open in Colab" badge and the bootstrap cell's ``REPO = "..."`` (the ``git clone``).
A fork runs ``python -m chartrl_colab.restamp OWNER/REPO`` (or ``make restamp REPO=OWNER/REPO``) from its clone.

>>> badge_url("https://github.com/me/fork", "02_train.ipynb")
'https://colab.research.google.com/github/me/fork/blob/main/notebooks/02_train.ipynb'
>>> normalize("me/fork"), normalize("https://github.com/me/fork.git")
('https://github.com/me/fork', 'https://github.com/me/fork')
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from chartrl_colab.errors import ConfigError
from chartrl_colab.messages import configure_logging

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]  # the clone this package runs from
BRANCH = "main"  # the branch the badges open
GITHUB = "https://github.com/"
_URL_LINE = re.compile(r'^(Repository\s*=\s*)"([^"]*)"', re.M)
_BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^/\s)]+/[^/\s)]+/blob/[^/\s)]+/notebooks/")
_CLONE = re.compile(r'^REPO = "[^"]*"', re.M)
_OWNER_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def normalize(repo: str) -> str:
    """``OWNER/REPO`` or a GitHub URL -> ``https://github.com/OWNER/REPO`` (Colab's badges open GitHub only)."""
    text = repo.strip().removesuffix("/").removesuffix(".git")
    text = text.removeprefix(GITHUB).removeprefix("http://github.com/").removeprefix("github.com/")
    if not _OWNER_REPO.match(text):
        raise ConfigError(f"repository {repo!r} is not OWNER/REPO or https://github.com/OWNER/REPO")
    return GITHUB + text


def repo_url(root: str | Path = ROOT) -> str:
    """The address in ``pyproject.toml``'s ``[project.urls] Repository``."""
    found = _URL_LINE.search((Path(root) / "pyproject.toml").read_text())
    if not found:
        raise ConfigError(f"{Path(root) / 'pyproject.toml'} has no [project.urls] Repository line")
    return found.group(2)


def badge_url(url: str, notebook: str, branch: str = BRANCH) -> str:
    """The "Open in Colab" link of ``notebooks/<notebook>`` in the repository at ``url``."""
    owner_repo = normalize(url).removeprefix(GITHUB)
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/notebooks/{notebook}"


def clone_line(url: str) -> str:
    """The bootstrap cell's first settings line (its comment says how to change it)."""
    return f'REPO = "{normalize(url)}"'


def restamp(repo: str, root: str | Path = ROOT, branch: str = BRANCH) -> list[Path]:
    """Point pyproject's URL and every notebook's badge and clone line at ``repo``; returns the files changed."""
    import nbformat

    url, root = normalize(repo), Path(root)
    repo_url(root)  # raises when there is no line to restamp
    changed = []
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    new = _URL_LINE.sub(lambda m: f'{m.group(1)}"{url}"', text, count=1)
    if new != text:
        pyproject.write_text(new)
        changed.append(pyproject)
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        before = [cell.source for cell in nb.cells]
        for cell in nb.cells:
            cell.source = _BADGE.sub(badge_url(url, "", branch), cell.source)
            if cell.cell_type == "code":
                cell.source = _CLONE.sub(clone_line(url), cell.source)
        if [cell.source for cell in nb.cells] != before:
            nbformat.write(nb, str(path))
            changed.append(path)
    log.info("Repository %s: %d file(s) restamped%s", url, len(changed), "".join(f"\n  {p}" for p in changed))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chartrl_colab.restamp", description=__doc__.split("\n\n")[0])
    parser.add_argument("repo", help="OWNER/REPO or https://github.com/OWNER/REPO of your fork")
    parser.add_argument("--root", default=str(ROOT), help="the clone to rewrite (default: this package's)")
    parser.add_argument("--branch", default=BRANCH, help="the branch the Colab badges open")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        restamp(args.repo, args.root, args.branch)
    except ConfigError as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
