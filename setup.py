"""Build hook: generate gRPC stubs from proto/ before packaging (see tools/gen_proto.py)."""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithProtos(build_py):
    def run(self) -> None:
        spec = importlib.util.spec_from_file_location("gen_proto", Path(__file__).parent / "tools" / "gen_proto.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.generate()
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})
