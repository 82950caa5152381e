"""Engine building (floor 5): a TensorRT engine made where it runs, from an export folder alone.

- :mod:`~edgeyolo.build.engine`: ``build_from_manifest(graph, options)``, what ``edgeyolo
  build`` and ``edgeyolo export --engine`` both call: the manifest's checks, the build, the
  parity check against the stored reference detections, and the manifest's update.
- :mod:`~edgeyolo.build.tensorrt`: the TensorRT builder calls (8.6, 10.x, 11.x; DLA).
- :mod:`~edgeyolo.build.options`: :class:`~edgeyolo.build.options.BuildOptions`, the one set of
  build options of both commands.
- :mod:`~edgeyolo.build.references`: the parity floors per precision and
  ``check_against_references(artifact, refs, precision, tf32)``.

No checkpoint and no torch: this package runs on the deploy install. It imports nothing itself.
"""
