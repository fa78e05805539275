"""Check the built documentation site: links, reference coverage, gallery figures.

    python scripts/check_docs.py build/docs/html

- every relative link and anchor in every page resolves to a file and an id;
- every name of ``ase_symcalc.__all__`` is documented in the API reference,
  with every parameter of its signature named there;
- every ``ase-symcalc`` command and every option of each appears in the CLI
  reference;
- every gallery page of an executed example that draws holds its figure.

Exits 1 with one line per problem.
"""

from __future__ import annotations

import inspect
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def check_links(root: Path, pages: dict[Path, _Page]) -> list[str]:
    problems = []
    for path, page in pages.items():
        for link in page.links + page.images:
            parts = urlsplit(link)
            if parts.scheme or link.startswith(("//", "mailto:")):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if parts.path.endswith("/") or target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{path.relative_to(root)}: broken link {link}")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{path.relative_to(root)}: missing anchor {link}")
    return problems


def check_api(root: Path) -> list[str]:
    import ase_symcalc

    page = root / "reference" / "api.html"
    parsed = parse(page)
    text = " ".join(parsed.text)
    problems = []
    for name in ase_symcalc.__all__:
        if name.startswith("__"):
            continue
        if f"ase_symcalc.{name}" not in parsed.ids:
            problems.append(f"reference/api.html: ase_symcalc.{name} is not documented")
            continue
        obj = getattr(ase_symcalc, name)
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):
            continue
        for parameter in signature.parameters:
            if parameter in ("self", "args", "kwargs") or parameter.startswith("_"):
                continue
            if not re.search(rf"\b{re.escape(parameter)}\b", text):
                problems.append(f"reference/api.html: parameter {parameter!r} of {name} missing")
    return problems


def check_cli(root: Path) -> list[str]:
    from ase_symcalc.cli import build_parser

    text = " ".join(parse(root / "reference" / "cli.html").text)
    problems = []
    parser = build_parser()
    for action in parser._actions:  # argparse has no public walk of its sub-commands
        if not hasattr(action, "choices") or not isinstance(action.choices, dict):
            continue
        for command, sub in action.choices.items():
            if command not in text:
                problems.append(f"reference/cli.html: command {command!r} missing")
            for option in sub._actions:
                for flag in option.option_strings:
                    if flag.startswith("--") and flag != "--help" and flag not in text:
                        problems.append(f"reference/cli.html: {command} {flag} missing")
    return problems


def check_gallery(root: Path) -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
    from conf import GALLERY_EXECUTED

    problems = []
    gallery = root / "auto_examples"
    examples = Path(__file__).resolve().parents[1] / "examples"
    for page in sorted(gallery.glob("*.html")):
        if page.name == "index.html" or not re.fullmatch(GALLERY_EXECUTED, page.stem + ".py"):
            continue
        if "matplotlib" not in (examples / f"{page.stem}.py").read_text():
            continue  # an example that prints only
        images = [src for src in parse(page).images if "sphx_glr" in src and "thumb" not in src]
        if not images:
            problems.append(f"auto_examples/{page.name}: an executed example without a figure")
    if not gallery.is_dir():
        problems.append("auto_examples/: the gallery was not built")
    return problems


def main(argv=None) -> int:
    root = Path((argv or sys.argv[1:] or ["build/docs/html"])[0]).resolve()
    pages = {path.resolve(): parse(path) for path in root.rglob("*.html")}
    problems = check_links(root, pages) + check_api(root) + check_cli(root)
    problems += check_gallery(root)
    for problem in problems:
        print(problem)
    print(f"check_docs: {len(pages)} pages, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
