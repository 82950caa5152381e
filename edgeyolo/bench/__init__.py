"""The bench runner (floor 7): latency, mAP, parity and compute of exported models against their
checkpoint, over inference (:mod:`edgeyolo.runtime`) and metrics (:mod:`edgeyolo.metrics`).

- :mod:`~edgeyolo.bench.config`: ``BenchConfig``, the settings of one run, checked in one place.
- :mod:`~edgeyolo.bench.runner`: ``run_bench(config)``, the steps of ``edgeyolo bench``.
- :mod:`~edgeyolo.bench.results`: ``BenchResult`` and its parts; ``to_dict()`` is ``bench.json``.
- :mod:`~edgeyolo.bench.report`: ``bench.json``, ``bench.md``, ``bench.png`` and the table.
- :mod:`~edgeyolo.bench.latency`, :mod:`~edgeyolo.bench.roofline`: the timing loop, the
  stability verdict and the fp32 matmul roof.

This package itself imports nothing (``edgeyolo bench --help`` stays quick).
"""
