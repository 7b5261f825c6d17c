"""Extension definitions; metadata lives in pyproject.toml.

The kernels are built portable: the compiler's baseline ISA for the target, no -march=native,
so a wheel built here runs on any machine of its platform tag. -ffp-contract=off keeps every
multiply and add separately rounded, which makes the compiled step bit-identical to the numpy
reference (lrcore/reference.py).
"""
import os
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

COMPILE_ARGS = {
    "msvc": ["/O2", "/fp:precise"],
    "unix": ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"],
}
OPENMP_ARGS = {"msvc": (["/openmp"], []), "unix": (["-fopenmp"], ["-fopenmp"])}


class BuildExt(build_ext):
    """Pick optimization flags for the compiler actually in use, and OpenMP when it has it
    (without, the kernels run on the calling thread only). LRCORE_NO_OPENMP=1 disables it."""

    def build_extensions(self):
        kind = self.compiler.compiler_type if self.compiler.compiler_type in COMPILE_ARGS else "unix"
        compile_args, link_args = COMPILE_ARGS[kind], []
        if not os.environ.get("LRCORE_NO_OPENMP") and self._compiles_openmp(*OPENMP_ARGS[kind]):
            compile_args = compile_args + OPENMP_ARGS[kind][0]
            link_args = OPENMP_ARGS[kind][1]
        for ext in self.extensions:
            ext.extra_compile_args = compile_args + ext.extra_compile_args
            ext.extra_link_args = link_args + ext.extra_link_args
        super().build_extensions()

    def _compiles_openmp(self, compile_args, link_args):
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "omp.c")
            with open(source, "w") as f:
                f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
            try:
                objects = self.compiler.compile([source], output_dir=tmp, extra_postargs=compile_args)
                self.compiler.link_executable(objects, "omp", output_dir=tmp,
                                              extra_postargs=link_args)
            except Exception:       # CompileError, LinkError: no OpenMP here
                return False
        return True


extensions = [
    Extension(
        "lrcore._kernels",
        sources=["src/_kernels.pyx"],
        depends=["src/kernels.h", "src/kernels_impl.h", "src/kernels.pxd", "src/schedules.h",
                 "src/schedules.pxd", "src/overlap.h"],
        include_dirs=["src", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(extensions, include_path=["src"], language_level=3),
    cmdclass={"build_ext": BuildExt},
)
