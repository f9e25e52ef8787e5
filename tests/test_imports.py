"""The package's import structure: no import cycles (a lazy import inside a
function that only dodges one counts), and `import keras_vit` that does not
depend on how the program started: alone it imports neither Keras nor
TensorFlow and touches no file descriptor; names load on first use; after
`import keras` it registers the classes `keras.saving.load_model` needs."""

import subprocess
import sys
import textwrap

from benchmarks.code_health import import_cycles, import_graph


def test_keras_vit_import_graph_is_acyclic():
    assert import_cycles() == []


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from pkg import a\n    return a\n")
    (package / "sub" / "c.py").write_text("from . import b\nimport pkg.sub.b as bb\n")
    assert import_graph(package)["pkg.sub.c"] == {"pkg.sub.b"}
    assert import_cycles(package) == [["pkg.a", "pkg.sub.b"]]


def _run(code, argv0):
    script = textwrap.dedent(f"""
        import os, sys
        sys.argv = [{argv0!r}]
        before = sorted(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
        stat2 = os.fstat(2)
        import keras_vit
        after = sorted(os.listdir("/proc/self/fd")) if before is not None else None
        same = (os.fstat(2).st_ino, os.fstat(2).st_dev) == (stat2.st_ino, stat2.st_dev)
        print("KERAS" if "keras" in sys.modules else "NO_KERAS", "TF" if "tensorflow" in sys.modules else "NO_TF",
              "FD_SAME" if same and before == after else "FD_CHANGED")
        {code}
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def test_import_keras_vit_has_no_side_effects_whatever_the_program_name():
    for argv0 in ("keras-vit", "train.py"):
        proc = _run("", argv0)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["NO_KERAS", "NO_TF", "FD_SAME"], (argv0, proc.stdout, proc.stderr)


def test_top_level_names_load_on_first_use():
    proc = _run("print(keras_vit.build_vit.__module__, type(keras_vit.PRESETS).__name__, "
                "'ViTClassifier' in dir(keras_vit))", "python")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[3:] == ["keras_vit.models.classifier", "dict", "True"]


def test_after_import_keras_import_keras_vit_registers_the_classes():
    proc = _run("import keras; print(keras.saving.get_registered_object('keras_vit>ViTClassifier') is not None)",
                "python")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[3] == "False"  # keras_vit alone did not import Keras ...
    code = ("import keras, keras_vit; print(keras.saving.get_registered_object('keras_vit>ViTClassifier').__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "ViTClassifier"  # ... but with Keras loaded first, it registers


def test_the_command_starts_without_the_optional_imports_no_command_uses():
    # `keras-vit train` builds its parser and loads Keras without scikit-learn,
    # matplotlib.pyplot, IPython, KerasTuner or (on TensorFlow) JAX; each still imports
    # afterwards, as the data, plot and tune code import them
    code = textwrap.dedent("""
        import os, sys
        os.environ["KERAS_BACKEND"] = "tensorflow"
        from keras_vit.cli import main, startup
        startup.quiet_startup()
        import keras_vit.layers, keras_vit.models
        main.build_parser().parse_args(["train", "--epochs", "1"])
        print(sorted(m for m in ("sklearn", "matplotlib.pyplot", "IPython", "keras_tuner", "jax")
                      if m in sys.modules))
        import jax.numpy, keras_tuner, matplotlib.pyplot, sklearn.model_selection
        print(float(jax.numpy.ones(2).sum()), keras_tuner.RandomSearch.__name__)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[:2] == ["[]", "2.0 RandomSearch"], proc.stdout
