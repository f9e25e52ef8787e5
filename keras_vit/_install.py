"""What this installation is: the version, the distribution's name, and
the refusal of the other PyPI project that also installs a module named
keras_vit. Standard library only: `keras_vit/__init__.py` runs the check at
import, and the command runs it again."""

__version__ = "0.2.0"

DISTRIBUTION = "keras-vision-transformer"
OTHER_DISTRIBUTION = "keras-vit"
# Every release of this repository, including those installed under the old
# name keras-vit (0.1.0, 0.2.0), had this summary; the other project's
# (keras-vit 1.0.1, github.com/djsaber/Keras-ViT) is "Implementation of ViT
# model based on Keras".
SUMMARY = "Vision Transformers as serializable Keras 3 layers"


def refuse_the_other_keras_vit():
    """Raises ImportError when the other project named keras-vit is
    installed: its `keras_vit` module and ours share one import name, so
    which files Python finds (or an uninstall removes) is an accident. An
    install of this project under its old name keras-vit is recognised by
    its summary. Reads installed metadata only: milliseconds."""
    from importlib import metadata

    for dist in metadata.distributions(name=OTHER_DISTRIBUTION):
        summary = dist.metadata.get("Summary") or ""
        if summary.startswith(SUMMARY):
            continue  # this project, installed under its old name
        raise ImportError(
            f"The distribution {OTHER_DISTRIBUTION!r} {dist.version} ({summary or 'no summary'}, at "
            f"{dist.locate_file('')}) is another project that also installs a module named keras_vit; "
            f"this keras_vit is the distribution {DISTRIBUTION!r}. The two cannot be installed together. "
            f"Fix: pip uninstall {OTHER_DISTRIBUTION}, then reinstall this one: "
            f"pip install --force-reinstall {DISTRIBUTION} (or pip install -e . in its checkout).")
