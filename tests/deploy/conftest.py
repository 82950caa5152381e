from tests.runtime.conftest import busy_checkpoint, calib_folder, exported, mnist_images  # noqa: F401
