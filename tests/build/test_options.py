"""edgeyolo.build.options: one set of build options for ``build`` and ``export --engine``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgeyolo.build.options import BuildOptions
from edgeyolo.config import ExportConfig
from edgeyolo.errors import ConfigError


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"workspace_gib": 0}, r"--workspace must be a positive number of GiB, got 0"),
        ({"max_batch": 0}, r"--max-batch must be >= 1, got 0"),
        ({"typing": "medium"}, r"unknown --typing 'medium'; use auto, strong, weak"),
        ({"dla_core": -1}, r"--dla-core must be 0 or more"),
        ({"gpu_fallback": True}, r"--gpu-fallback only applies to DLA builds.*add --dla-core"),
    ],
)
def test_impossible_options_are_refused_naming_the_flag(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BuildOptions(**kw)


def test_export_options_map_onto_build_options() -> None:
    cfg = ExportConfig(
        weights="w.pt", engine=True, batch=6, workspace_gib=3.5, timing_cache="t.cache",
        engine_typing="strong", tf32=True, trt_verbose=True,
    )  # fmt: skip
    options = BuildOptions.from_export(cfg)
    assert options == BuildOptions(
        workspace_gib=3.5, timing_cache=Path("t.cache"), max_batch=6, typing="strong",
        tf32=True, verbose=True,
    )  # fmt: skip
    assert BuildOptions.from_export(ExportConfig(weights="w.pt")) == BuildOptions(max_batch=1)
    assert BuildOptions().workspace_gib == ExportConfig().workspace_gib  # one default


@pytest.mark.parametrize(
    ("max_batch", "dla", "want"),
    [(1, None, (1, 1, 1)), (2, None, (1, 2, 2)), (8, None, (1, 4, 8)), (8, 0, (8, 8, 8))],
)
def test_profile_batches(max_batch: int, dla: int | None, want: tuple[int, int, int]) -> None:
    options = BuildOptions(dla_core=dla, gpu_fallback=dla is not None)
    assert options.batches(max_batch) == want
