"""Print the exact versions of zkpot's runtime dependencies (the closure of its `dependencies`, no
extras) as installed in this environment: the runtime lock, constraints.txt, that `make install`
and the images' wheelhouse both install from.

    .venv/bin/python tools/runtime-constraints.py > constraints.txt   # after upgrading a dependency
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
    print("# The runtime lock: zkpot's runtime dependencies at exact versions (tools/runtime-constraints.py")
    print("# writes it from a venv). `make install` installs with it (torch aside: tools/install-torch.sh) and")
    print("# the images' wheelhouse is resolved with it (deploy/docker/make-wheelhouse.sh): what the tests run")
    print("# is what the images hold.")
    for name, version in sorted(closure("zkpot").items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
