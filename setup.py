"""Everything is in pyproject.toml; this only adds the startup hook file (see build_py below)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "clipdistill-torchvision-shim.pth"


class BuildPyWithPth(build_py):
    """Ship `clipdistill-torchvision-shim.pth` at the top of site-packages: Python runs it at startup, so
    torchvision gets its CPU shim even when open_clip/timm/torchvision are imported before clipdistill."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / PTH
        target.write_text((Path(__file__).parent / "src" / PTH).read_text())

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH)]


setup(cmdclass={"build_py": BuildPyWithPth})
