"""The export folder the deploy tests read: fp32, fp16 and int8 graphs of the busy random model.

Made on the training side (it needs torch); a deploy-only venv (scripts/twin.sh's oldest and
system twins) is given a folder made beforehand through ``EDGEYOLO_TEST_EXPORT``::

    python -m tests.deploy.make_export OUT      # in the training venv
    EDGEYOLO_TEST_EXPORT=OUT python -m pytest tests/deploy   # in the deploy venv
"""

from __future__ import annotations

import sys
from pathlib import Path


def make_deploy_export(out: Path, calib: Path, checkpoint: Path) -> Path:
    """Export ``checkpoint`` into ``out``: fp32 + fp16 + int8 (TensorRT placement, the default),
    max batch 4, deployment conf 0.3, calibrated on ``calib``; returns ``out``."""
    from edgeyolo.config import ExportConfig
    from edgeyolo.export.pipeline import export_model

    cfg = ExportConfig(
        weights=str(checkpoint),
        out=str(out),
        fp16=True,
        int8=True,
        batch=4,
        calib=str(calib),
        conf_thres=0.3,
    )
    export_model(cfg, progress=False, log=lambda _s: None)
    return out


def main(argv: list[str]) -> int:
    import tempfile

    from edgeyolo.config import to_dict
    from edgeyolo.models.checkpoint import save_checkpoint
    from tests.conftest import make_mnist_set
    from tests.export.conftest import busy_model

    out = Path(argv[0])
    with tempfile.TemporaryDirectory() as tmp:
        data = make_mnist_set(Path(tmp) / "small", n_train=6, n_test=2, size=96, val_is_train=False)
        net = busy_model()
        ckpt = Path(tmp) / "busy.pt"
        save_checkpoint(ckpt, {"model_config": to_dict(net.config), "model": net.state_dict()})
        make_deploy_export(out, data.parent / "images" / "train", ckpt)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
