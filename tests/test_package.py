import subprocess
import sys


def test_import_is_light_and_lazy_names_resolve():
    code = (
        "import sys, edgeyolo; "
        "assert 'torch' not in sys.modules, 'import edgeyolo pulled in torch'; "
        "assert 'tensorrt' not in sys.modules and 'pycuda' not in sys.modules; "
        "from edgeyolo import TrainConfig, Trainer, build_model; "
        "from edgeyolo.train import train; "
        "assert TrainConfig().model == 'yolov3-tiny'; "
        "assert callable(train) and callable(build_model) and callable(Trainer)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_is_an_attribute_error():
    import edgeyolo

    try:
        edgeyolo.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")
