"""Builds the Cython kernels under cext/; everything else is declared in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = ["g711", "sipscan"]
# Kernels with plain C beside them (cext/native/NAME.c).
NATIVE = {"engine": ["cext/native/engine.c"]}

extensions = [
    Extension(f"cext.{name}", [f"cext/{name}.pyx"], extra_compile_args=["-O3"]) for name in KERNELS
] + [
    Extension(f"cext.{name}", [f"cext/{name}.pyx", *sources], extra_compile_args=["-O3", "-Wall"],
              libraries=["pthread"])
    for name, sources in NATIVE.items()
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level="3",
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
