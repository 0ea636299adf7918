"""Installed size of what a requirement set pulls in, read from this environment's
installed distributions (each one's RECORD: the files pip wrote), following every
``Requires-Dist`` whose markers hold, extras included. No download: it measures what is
installed here, which is what ``pip install`` of the same set puts into an image.

    python -m bench.install_size 'turnout' 'turnout[local]'

Prints MiB and the number of distributions per set, and the largest contributors."""

from __future__ import annotations

import argparse
import json
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement


def _size(dist: metadata.Distribution) -> int:
    total = 0
    for file in dist.files or ():
        path = Path(str(dist.locate_file(file)))
        if path.is_file():
            total += path.stat().st_size
    return total


def closure(requirement: str) -> dict[str, int]:
    """Distribution name -> installed bytes, for ``requirement`` and all it needs."""
    sizes: dict[str, int] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(requirement)]
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        key = (name, frozenset(req.extras))
        if key in visited:
            continue
        visited.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        sizes.setdefault(name, _size(dist))
        for line in dist.requires or ():
            child = Requirement(line)
            if child.marker is None or any(child.marker.evaluate({"extra": extra})
                                           for extra in ("", *req.extras)):
                todo.append(child)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("requirements", nargs="+")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {}
    for requirement in args.requirements:
        sizes = closure(requirement)
        results[requirement] = {"mib": round(sum(sizes.values()) / 2**20, 1),
                                "distributions": len(sizes),
                                "largest": sorted(sizes.items(), key=lambda kv: -kv[1])[:6]}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for requirement, r in results.items():
        largest = ", ".join(f"{n} {b / 2**20:.0f}" for n, b in r["largest"])
        print(f"{requirement}: {r['mib']} MiB in {r['distributions']} distributions "
              f"(largest MiB: {largest})")


if __name__ == "__main__":
    main()
