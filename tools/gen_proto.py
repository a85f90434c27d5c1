"""Generate the Python gRPC stubs for proto/zkpot/v1/*.proto into zkpot/v1/.

Run by the build (setup.py build_py) and by `make proto`; the output is never edited by hand
and never committed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generate(root: Path = ROOT) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc  # build-time dependency

    proto_dir = root / "proto"
    protos = sorted(str(p.relative_to(proto_dir)) for p in (proto_dir / "zkpot" / "v1").glob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{include}",
        f"--python_out={root}",
        f"--pyi_out={root}",
        f"--grpc_python_out={root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted((root / "zkpot" / "v1").glob("*_pb2*.py"))


if __name__ == "__main__":
    out = generate()
    print(f"generated {len(out)} modules into zkpot/v1/", file=sys.stderr)
