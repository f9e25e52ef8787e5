"""The benchmark suite runs end to end on a tiny configuration (timing
targets live in benchmarks/, not here: these tests check that the suite
works and writes what it promises)."""

import json

import pytest

from tests.conftest import REPO, run_python


@pytest.fixture(scope="module")
def tensorflow_runs(tmp_path_factory):
    """One TensorFlow process runs the suite (with the memory measurement)
    and the MFU measurement on the tiny configuration, eagerly; returns
    their output folder."""
    out = tmp_path_factory.mktemp("benchmarks")
    code = (
        "from benchmarks import mfu, run\n"
        f"run.main(['--configs', 'tiny', '--contenders', 'keras_vit', '--jit', 'off', '--repeats', '2',"
        f" '--out', {str(out)!r}])\n"
        f"mfu.main(['--configs', 'tiny', '--contenders', 'keras_vit', '--jit', 'off', '--repeats', '1',"
        f" '--peak-size', '512', '--out', {str(out / 'mfu')!r}])\n"
    )
    run_python(code, timeout=600, cwd=str(REPO), lean=True)  # from a source checkout, as the README says
    return out


def test_suite_writes_json_and_markdown_with_memory(tensorflow_runs):
    tmp_path = tensorflow_runs
    (json_file,) = tmp_path.glob("suite-*.json")
    payload = json.loads(json_file.read_text())
    (row,) = payload["rows"]
    assert row["contender"] == "keras_vit" and row["params"] == 19626
    assert len(row["train_samples"]) == 2 and row["train_img_s"] > 0 and row["infer_img_cpu_s"] > 0
    assert row["peak_mb"] > 0, row
    assert "| tiny | False | keras_vit | 19,626 |" in json_file.with_suffix(".md").read_text()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--configs", "huge"], "--configs: unknown value(s) ['huge']. Accepted values: ti, s16"),
        (["--contenders", "timm"], "Accepted values: keras_vit, keras_hub"),
        (["--sections", "gpu"], "Accepted values: suite, scaling, pipeline, tflite"),
    ],
)
def test_bad_choices_name_the_accepted_values(argv, message):
    from benchmarks.run import parse_args

    with pytest.raises(SystemExit, match=None) as err:
        parse_args(argv)
    assert message in str(err.value)


def test_non_positive_repeats_are_refused(capsys):
    from benchmarks.run import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--repeats", "0"])
    assert "--repeats must be a positive int, got 0" in capsys.readouterr().err


def test_mfu_counts_flops_against_the_measured_gemm_peak(tensorflow_runs):
    from benchmarks.contenders import CONFIGS
    from benchmarks.mfu import forward_flops, matmul_shapes

    # the Ti-like count by hand: patches, 6 blocks of projections and attention, the head
    tokens, width = 65, 192
    block = 2 * tokens * width * (4 * width + 2 * 768) + 4 * tokens**2 * width
    assert forward_flops(CONFIGS["ti"]) == 2 * 64 * 48 * width + 6 * block + 2 * width * 10
    # the ceiling times exactly the matmuls the count counts
    ti = CONFIGS["ti"]
    assert sum(2 * b * m * k * n for b, m, k, n in matmul_shapes(ti)) == ti.batch_size * forward_flops(ti)
    out = tensorflow_runs / "mfu"
    result = json.loads(out.with_suffix(".json").read_text())
    row, ceiling = result["rows"]
    # a peak sample before the first measurement and after each: 3 modes and the 2 ceilings, one round
    assert result["gemm_peak_flops"] > 1e9 and len(result["gemm_peak_samples"]) == 1 + 3 + 2
    assert 0 < row["train_mfu"] < 1 and 0 < row["infer_mfu"] < 1 and 0 < row["plain_infer_cpu_mfu"]
    assert result["environment"]["load_average_start"] and "TF_ENABLE_ONEDNN_OPTS=" in out.with_suffix(".md").read_text()
    assert ceiling["contender"] == "matmuls alone" and ceiling["train_mfu"] > 0 and ceiling["infer_mfu"] > 0
    assert "| tiny | keras_vit | off |" in out.with_suffix(".md").read_text()
    assert "GEMM peak (512^3 float32" in out.with_suffix(".md").read_text()  # the size asked for (tests: a quick one)


def _check_backend_mfu(out, backend):
    result = json.loads(out.with_suffix(".json").read_text())
    row, ceiling = result["rows"]
    assert result["environment"]["backend"] == backend and result["gemm_peak_flops"] > 1e9
    # JAX compiled, torch eager: each backend's default way of running the model
    assert row["jit_compile"] is (backend == "jax")
    # the tiny model's MFU is far below 0.001 on a busy machine; it is kept to three significant digits
    assert row["train_images_per_s"] > 0 and row["infer_images_per_s"] > 0 and row["plain_infer_images_per_s"] > 0
    assert 0 < row["train_mfu"] < 1 and 0 < row["infer_mfu"] < 1
    assert ceiling["contender"] == "matmuls alone" and ceiling["infer_mfu"] > 0
    assert f"Keras backend: {backend}." in out.with_suffix(".md").read_text()


def test_jax_runs_the_suite_without_tensorflow_then_the_mfu(tmp_path):
    """One JAX process runs the suite (XLA on), which never imports
    TensorFlow, then the MFU measurement with its backend's defaults (whose
    `inference_model` clones the model through Keras' serialization, which
    imports TensorFlow where it is installed)."""
    code = (
        "import sys\n"
        "from benchmarks import mfu, run\n"
        f"run.main(['--configs', 'tiny', '--contenders', 'keras_vit', '--jit', 'on', '--repeats', '1',"
        f" '--no-memory', '--out', {str(tmp_path)!r}])\n"
        "print('TF_IMPORTED', 'tensorflow' in sys.modules)\n"
        f"mfu.main(['--configs', 'tiny', '--contenders', 'keras_vit', '--repeats', '1', '--peak-size', '512',"
        f" '--out', {str(tmp_path / 'mfu')!r}])\n"
    )
    proc = run_python(code, env={"KERAS_BACKEND": "jax"})
    assert "TF_IMPORTED False" in proc.stdout
    assert list(tmp_path.glob("suite-jax-*.json"))
    _check_backend_mfu(tmp_path / "mfu", "jax")


def test_mfu_has_a_backend_axis_on_torch(tmp_path):
    out = tmp_path / "mfu"
    run_python(["-m", "benchmarks.mfu", "--configs", "tiny", "--contenders", "keras_vit", "--repeats", "1",
                "--peak-size", "512", "--out", str(out)], env={"KERAS_BACKEND": "torch"}, timeout=600)
    _check_backend_mfu(out, "torch")


def test_code_health_counts_code_lines_only(tmp_path):
    """Docstrings, comments and blank lines are not counted; nested functions count in their parent too."""
    from benchmarks.code_health import function_lengths, long_functions

    (tmp_path / "pkg").mkdir()
    source = tmp_path / "pkg" / "m.py"
    source.write_text(
        'def f(a,\n      b):\n    """Doc\n\n    more doc."""\n    # a comment\n\n    x = a\n'
        '    def g():\n        """Inner doc."""\n        return x\n    return g\n\n\n'
        'class C:\n    def m(self):\n        return [\n            1,\n        ]\n')
    assert sorted(function_lengths(source)) == [(2, "f.g", 9), (4, "C.m", 16), (6, "f", 1)]
    assert long_functions(5, tmp_path / "pkg") == [(6, "pkg/m.py:1 f")]
