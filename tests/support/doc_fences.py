"""The fenced code blocks and inline code of the documentation pages, for the docs tests."""

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
# A block that is not a whole config says so in an HTML comment on the line before its fence.
FRAGMENT = re.compile(r"<!--\s*fragment\b.*-->")
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    text: str
    fragment: bool

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def pages(readme: bool = False) -> list[Path]:
    found = sorted(DOCS.rglob("*.md"))
    return [README, *found] if readme else found


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rpartition("\n")[2]
        found.append(Block(path, line, match.group(1), match.group(2),
                           bool(FRAGMENT.fullmatch(before.strip()))))
    return found


def prose(path: Path) -> str:
    """The page without its fenced blocks."""
    return _FENCE.sub("", path.read_text(encoding="utf-8"))


def inline_code(path: Path) -> list[str]:
    return _INLINE.findall(prose(path))
