"""Builds the Cython kernels under cext/; everything else is declared in pyproject.toml.

Each `cext/NAME.pyx` becomes `cext.NAME`; when `cext/native/NAME.c` exists it is compiled in too. The
media loop (`engine`) also links the plain-C kernels it drives in the media thread.
"""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
# C kernels the media thread calls directly (linked into cext.engine when present)
ENGINE_PARTS = ["groups", "jitter", "wav", "rfc4733", "mix", "rtcp", "dtmf", "amd", "streams", "srtp"]


def sources(name: str) -> list[str]:
    out = [f"cext/{name}.pyx"]
    parts = [name] + (ENGINE_PARTS if name == "engine" else [])
    out += [f"cext/native/{part}.c" for part in parts if (HERE / "cext" / "native" / f"{part}.c").exists()]
    return out


extensions = [
    Extension(f"cext.{pyx.stem}", sources(pyx.stem), extra_compile_args=["-O3", "-Wall"], libraries=["pthread"])
    for pyx in sorted((HERE / "cext").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level="3",
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
