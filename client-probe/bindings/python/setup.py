"""Marks the wheel as platform-specific: it carries a native library, so a
pure-Python tag (py3-none-any) would let pip install it on a machine the
library cannot load on. Everything else is in pyproject.toml."""

from setuptools import setup
from setuptools.dist import Distribution


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return True


setup(distclass=BinaryDistribution)
