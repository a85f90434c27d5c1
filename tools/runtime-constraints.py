"""Print the exact versions of zkpot's runtime dependencies (the closure of its `dependencies`, no
extras) as installed in this environment: the images are built from the versions the tests ran.

    .venv/bin/python tools/runtime-constraints.py > deploy/docker/constraints.txt
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution


def _name(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def closure(root: str) -> dict[str, str]:
    """name -> version of every distribution `root` needs at run time (markers this platform skips
    are skipped: the images run this platform's wheels)."""
    from packaging.requirements import Requirement

    seen: dict[str, str] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            dep = _name(req.name)
            if dep not in seen:
                seen[dep] = distribution(dep).version
                todo.append(dep)
    return seen


def main() -> None:
    print("# Runtime dependencies of zkpot as tested (tools/runtime-constraints.py); the images' wheelhouse")
    print("# is resolved with these constraints (deploy/docker/make-wheelhouse.sh).")
    for name, version in sorted(closure("zkpot").items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
