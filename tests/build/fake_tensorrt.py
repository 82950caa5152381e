"""A stand-in ``tensorrt`` module for tests on machines without TensorRT (all of CI).

The fakes mimic what the API check (test_tensorrt_api.py) found in the real bindings: 11.x has no
``EXPLICIT_BATCH`` and no ``BuilderFlag.FP16/INT8``; 8.6 has no ``STRONGLY_TYPED``. Severities
count down as in TensorRT's ``ILogger.Severity`` (INTERNAL_ERROR 0 ... VERBOSE 4) and print as
pybind11 enums do (``Severity.WARNING``). DLA: ``Builder.num_DLA_cores``, the config's
``default_device_type`` / ``DLA_core`` / ``can_run_on_DLA`` and the network's layers.
"""

from __future__ import annotations

import types
from types import SimpleNamespace
from typing import Any

PLAN = b"serialized-plan"
LAYERS = ("conv_0", "leaky_0", "conv_1", "topk", "nms", "gather")
OUTPUTS = ["num_dets", "boxes", "scores", "classes"]
SEVERITIES = ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")


class Severity(int):
    """``tensorrt.ILogger.Severity`` stand-in: an int that prints like a pybind11 enum."""

    def __str__(self) -> str:
        return f"Severity.{SEVERITIES[int(self)]}"


class FakeTensorRT(types.ModuleType):
    """A ``tensorrt`` stand-in that records every builder call in ``calls``; the build sends
    one message per severity to a Python ``ILogger`` subclass, as TensorRT calls ``log``."""

    def __init__(self, version: str, **behaviour: Any) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: list[tuple] = []
        self.behaviour = {"shape": (-1, 3, -1, -1), "errors": [], "plan": PLAN, "stale": None}
        self.behaviour |= {"dla_cores": 0, "layers": LAYERS, "not_on_dla": ()}
        self.behaviour.update({"outputs": OUTPUTS, **behaviour})
        major = int(version.split(".")[0])
        kinds = {"EXPLICIT_BATCH": 0} if major < 11 else {}
        kinds |= {"STRONGLY_TYPED": 1} if major >= 10 else {}
        self.NetworkDefinitionCreationFlag = SimpleNamespace(**kinds)
        flags = {"FP16": "FP16", "INT8": "INT8"} if major < 11 else {}
        self.BuilderFlag = SimpleNamespace(TF32="TF32", GPU_FALLBACK="GPU_FALLBACK", **flags)
        self.DeviceType = SimpleNamespace(GPU="GPU", DLA="DLA")
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
        self.ProfilingVerbosity = SimpleNamespace(DETAILED="DETAILED", LAYER_NAMES_ONLY="NAMES")
        fake = self
        levels = {name: Severity(i) for i, name in enumerate(SEVERITIES)}
        self.ILogger = type("ILogger", (), {**levels, "__init__": lambda s: None})

        class Logger(self.ILogger):  # TensorRT's own console logger
            def __init__(self, min_severity: Severity) -> None:
                fake.calls.append(("Logger", str(min_severity)))

        class Builder:
            def __init__(self, logger: Any) -> None:
                self.logger = logger
                self.num_DLA_cores = fake.behaviour["dla_cores"]

            def create_network(self, flags: int) -> Any:
                fake.calls.append(("create_network", flags))
                tensor = SimpleNamespace(name="images", shape=fake.behaviour["shape"])
                outs = [SimpleNamespace(name=n) for n in fake.behaviour["outputs"]]
                layers = [SimpleNamespace(name=n) for n in fake.behaviour["layers"]]
                return SimpleNamespace(
                    num_inputs=1,
                    get_input=lambda i: tensor,
                    num_outputs=len(outs),
                    get_output=lambda i: outs[i],
                    num_layers=len(layers),
                    get_layer=lambda i: layers[i],
                )

            def create_builder_config(self) -> Any:
                fake.config = FakeConfig(fake)
                return fake.config

            def create_optimization_profile(self) -> Any:
                return SimpleNamespace(set_shape=lambda *a: fake.calls.append(("set_shape", *a)))

            def build_serialized_network(self, network: Any, config: Any) -> Any:
                fake.calls.append(("build",))
                if not isinstance(self.logger, Logger):
                    for i, name in enumerate(SEVERITIES):
                        self.logger.log(Severity(i), f"{name.lower()} message")
                return fake.behaviour["plan"]

        class OnnxParser:
            def __init__(self, network: Any, logger: Any) -> None:
                self.num_errors = len(fake.behaviour["errors"])

            def parse_from_file(self, path: str) -> bool:
                fake.calls.append(("parse_from_file", path))
                return not self.num_errors

            def get_error(self, i: int) -> Any:
                return fake.behaviour["errors"][i]

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, OnnxParser

    def recorded(self, name: str) -> list[tuple]:
        return [c[1:] for c in self.calls if c[0] == name]


class FakeConfig:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake, self.cache = fake, None
        self.profiling_verbosity = "NAMES"  # TensorRT's default, LAYER_NAMES_ONLY
        self.default_device_type, self.DLA_core = "GPU", -1  # TensorRT's defaults

    def can_run_on_DLA(self, layer: Any) -> bool:
        assert self.default_device_type == "DLA" and self.DLA_core >= 0, "asked before set"
        return layer.name not in self.fake.behaviour["not_on_dla"]

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.fake.calls.append(("pool", pool, size))

    def set_flag(self, flag: str) -> None:
        self.fake.calls.append(("set_flag", flag))

    def clear_flag(self, flag: str) -> None:
        self.fake.calls.append(("clear_flag", flag))

    def add_optimization_profile(self, profile: Any) -> int:
        return 0

    def create_timing_cache(self, data: bytes) -> Any:
        return SimpleNamespace(data=bytes(data), serialize=lambda: b"cache:" + PLAN)

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        self.fake.calls.append(("set_timing_cache", cache.data, ignore_mismatch))
        self.cache = cache
        return cache.data != self.fake.behaviour["stale"]

    def get_timing_cache(self) -> Any:
        return self.cache


def parser_error(node: int, desc: str, name: str | None = None, op: str = "") -> Any:
    error = SimpleNamespace(node=lambda: node, desc=lambda: desc)
    if name is not None:  # 8.6's ParserError has no node_name / node_operator
        error.node_name, error.node_operator = (lambda: name), (lambda: op)
    return error
