"""Build pycuda from its source package into a folder, compiling its C++ files in parallel.

usage: python3 scripts/build_pycuda.py PYCUDA_SDIST.tar.gz TARGET_DIR [JOBS]

setuptools compiles an extension's sources one after another (pycuda's ~50 files take minutes);
here its compiler's ``compile`` runs them on JOBS threads (default: every core). Needs nvcc's
CUDA (``CUDA_ROOT``, else the folder above ``nvcc`` on PATH), numpy and setuptools; the built
package (with ``_driver*.so``) is copied to TARGET_DIR/pycuda. Its runtime needs (pytools, mako,
platformdirs, siphash24) are not installed here.
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
import tarfile
import tempfile
from multiprocessing.pool import ThreadPool
from pathlib import Path


def cuda_root() -> str:
    if os.environ.get("CUDA_ROOT"):
        return os.environ["CUDA_ROOT"]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        sys.exit("build_pycuda: no nvcc on PATH and no CUDA_ROOT: pycuda needs the CUDA toolkit")
    return str(Path(nvcc).resolve().parents[1])


def parallel_compile(jobs: int) -> None:
    """Make distutils' CCompiler.compile build its objects on ``jobs`` threads."""
    from setuptools._distutils import ccompiler  # what `distutils` is under setuptools >= 60

    def compile_all(self, sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                    extra_preargs=None, extra_postargs=None, depends=None):  # fmt: skip
        macros, objects, extra_postargs, pp_opts, build = self._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs
        )
        cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)

        def one(obj):
            src, ext = build[obj]
            self._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

        with ThreadPool(jobs) as pool:
            list(pool.imap_unordered(one, objects))
        return objects

    ccompiler.CCompiler.compile = compile_all
    if "distutils.ccompiler" in sys.modules:  # a stdlib distutils (Python <= 3.11) too
        sys.modules["distutils.ccompiler"].CCompiler.compile = compile_all


def main(sdist: str, target: str, jobs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="pycuda-build-"))
    with tarfile.open(sdist) as tar:
        tar.extractall(work, filter="data")
    src = next(work.glob("pycuda-*"))
    subprocess.run([sys.executable, "configure.py", f"--cuda-root={cuda_root()}"], cwd=src,
                   check=True)  # fmt: skip
    parallel_compile(jobs)
    os.chdir(src)
    sys.path.insert(0, str(src))
    sys.argv = ["setup.py", "build_ext", "--inplace"]
    runpy.run_path("setup.py", run_name="__main__")
    dest = Path(target) / "pycuda"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src / "pycuda", dest)
    print(f"build_pycuda: {dest} ({', '.join(p.name for p in dest.glob('*.so'))})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else os.cpu_count() or 4)
