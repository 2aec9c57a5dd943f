"""Builds the Cython kernels under cext/; everything else is declared in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = ["g711", "sipscan"]

extensions = [
    Extension(
        f"cext.{name}",
        [f"cext/{name}.pyx"],
        extra_compile_args=["-O3"],
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level="3",
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
