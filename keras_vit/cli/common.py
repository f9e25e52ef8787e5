"""Small helpers shared by the command modules: tables, class-name lists,
artifact sizes, and argument types that name the flag in their errors."""

import argparse
from pathlib import Path


def format_table(header, rows):
    """Formats rows of cells as a plain-text table with aligned columns.

    Example:
    >>> print(format_table(["a", "bb"], [[1, 2]]))
    a  bb
    -  --
    1  2
    """
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def read_class_names(value):
    """Class names from a text file (one per line) or a comma-separated list."""
    if value is None:
        return None
    if Path(value).is_file():
        return [line.strip() for line in Path(value).read_text().splitlines() if line.strip()]
    return [name.strip() for name in value.split(",")]


def size_of(path):
    """Bytes of a file, or of every file under a directory."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def int_at_least(minimum):
    """An argparse type: an int >= `minimum`, with an error naming the value."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int>={minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
