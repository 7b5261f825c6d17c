"""Extension definitions; metadata lives in pyproject.toml.

The kernels are built portable: the compiler's baseline ISA for the target, no -march=native,
so a wheel built here runs on any machine of its platform tag. -ffp-contract=off keeps every
multiply and add separately rounded, which makes the compiled step bit-identical to the numpy
reference (lrcore/reference.py).
"""
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

COMPILE_ARGS = {
    "msvc": (["/O2", "/fp:precise"], []),
    "unix": (["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-pthread"],
             ["-pthread"]),
}




def wants_debug_info():
    """Debug info only when the build asks for it (CFLAGS with -g, as .ci/asan's does): Python's
    own -g would otherwise make the extension about 5x larger than its code."""
    return any(flag.startswith("-g") and flag != "-g0" for flag in os.environ.get("CFLAGS", "").split())


class BuildExt(build_ext):
    """Pick optimization flags for the compiler actually in use. The kernels' threads are
    lrcore's own pool (src/pool.h, POSIX threads), so no OpenMP runtime is linked."""

    def build_extensions(self):
        kind = self.compiler.compiler_type if self.compiler.compiler_type in COMPILE_ARGS else "unix"
        compile_args, link_args = COMPILE_ARGS[kind]
        if kind == "unix" and not wants_debug_info():
            compile_args = compile_args + ["-g0"]
            if sys.platform.startswith("linux"):
                link_args = link_args + ["-s"]      # strip the symbol table too
        for ext in self.extensions:
            ext.extra_compile_args = compile_args + ext.extra_compile_args
            ext.extra_link_args = link_args + ext.extra_link_args
        super().build_extensions()


extensions = [
    Extension(
        "lrcore._kernels",
        sources=["src/_kernels.pyx"],
        depends=["src/kernels.h", "src/kernels_impl.h", "src/formats.h", "src/kernels.pxd", "src/schedules.h",
                 "src/schedules.pxd", "src/overlap.h", "src/pool.h", "src/fpcontrol.h", "src/compact.h"],
        include_dirs=["src", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # dlsym (src/pool.h) lives in libdl before glibc 2.34, as on manylinux2014's
        libraries=["dl"] if sys.platform.startswith("linux") else [],
    )
]

setup(
    ext_modules=cythonize(extensions, include_path=["src"], language_level=3),
    cmdclass={"build_ext": BuildExt},
)
