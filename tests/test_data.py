"""Tests of `keras_vit.data`: real arrays, real image files in tmp_path,
TFDS through `tfds.testing.mock_data`, and the bundled digits."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_vit.data import augment_batches, build_augmentation, load_data


def batches(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def indexed_arrays(n=60, size=4, classes=3):
    """Images whose constant pixel value is their index, labels cycling."""
    x = np.repeat(np.arange(n, dtype="float32")[:, None, None], size * size, 1).reshape(n, size, size)
    return x, np.arange(n) % classes


def test_digits_default_shapes_and_split_sizes():
    train, val, test, info = load_data("digits", 16, 32)
    x, y = next(iter(train))
    assert x.shape == (32, 16, 16, 1) and x.dtype == tf.float32
    assert y.shape == (32, 10)
    assert info.num_classes == 10 and info.channels == 1
    assert info.class_names == [str(i) for i in range(10)]
    assert sum(info.split_sizes.values()) == 1797
    assert info.split_sizes["test"] == 360
    assert float(tf.reduce_max(x)) <= 255.0 and float(tf.reduce_min(x)) >= 0.0


def test_pipelines_run_without_the_autotuning_thread():
    # TensorFlow 2.21 stalls in deleting an autotuned iterator (up to the
    # autotuning thread's sleep): Keras deletes one at the end of every fit
    # and evaluate, and budgeted runs overran by 20-46 s.
    for ds in load_data("digits", 16, 32, augment="digits")[:3]:
        assert ds.options().autotune.enabled is False
        x, _ = next(iter(ds))
        assert x.shape[1:] == (16, 16, 1)


def test_splits_are_disjoint_seeded_and_cover_everything():
    x, y = indexed_arrays()
    first = load_data((x, y), 4, 8, label_mode="int", seed=3)
    ids = [set(batches(ds)[0][:, 0, 0, 0].astype(int)) for ds in first[:3]]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert ids[0] | ids[1] | ids[2] == set(range(60))
    assert len(ids[2]) == 12  # test_split=0.2
    again = load_data((x, y), 4, 8, label_mode="int", seed=3)
    assert set(batches(again[2])[0][:, 0, 0, 0].astype(int)) == ids[2]
    other = load_data((x, y), 4, 8, label_mode="int", seed=4)
    assert set(batches(other[2])[0][:, 0, 0, 0].astype(int)) != ids[2]
    # labels travel with their images
    images, labels = batches(first[0])
    np.testing.assert_array_equal(labels, images[:, 0, 0, 0].astype(int) % 3)


def test_held_out_splits_keep_each_class_share():
    from keras_vit.sources import split_indices

    labels = np.repeat([0, 1, 2], [53, 31, 16])
    rest, held = split_indices(100, 0.2, seed=0, labels=labels)
    counts = np.bincount(labels[held], minlength=3)
    assert counts.sum() == 20 and np.all(np.abs(counts - [10.6, 6.2, 3.2]) < 1)
    assert len(np.union1d(rest, held)) == 100
    assert not np.array_equal(split_indices(100, 0.2, seed=1, labels=labels)[1], held)


def test_tiny_datasets_split_without_stratification():
    x, y = indexed_arrays(n=9, classes=3)
    _, val, test, info = load_data((x, y), 4, 8, validation_split=0.2, test_split=0.2)
    assert info.split_sizes == {"train": 5, "validation": 2, "test": 2}


def test_grayscale_to_rgb_and_pad_resize():
    x = np.full((10, 4, 8), 200.0, "float32")
    train, _, _, info = load_data((x, np.zeros(10, int)), 8, 2, channels=3, resize="pad",
                                  test_split=0, validation_split=0, num_classes=2)
    images, labels = batches(train)
    assert images.shape == (10, 8, 8, 3) and info.channels == 3
    np.testing.assert_allclose(images[..., 0], images[..., 2])
    assert np.all(images[:, :2] == 0) and np.all(images[:, 2:6] == 200)  # padded rows
    np.testing.assert_array_equal(labels, np.tile([1.0, 0.0], (10, 1)))


@pytest.mark.parametrize("resize", ["resize", "pad"])
def test_images_of_one_size_are_prepared_in_batches_as_one_by_one(resize):
    from keras_vit.data import PREPARE_BATCH
    from keras_vit.preprocessing import ImageSettings, prepare

    n = PREPARE_BATCH + 40  # a full preparation batch and a short one
    x = np.random.default_rng(0).integers(0, 256, (n, 20, 28, 1)).astype("uint8")
    train, _, test, info = load_data((x, np.arange(n) % 10), image_size=16, batch_size=64, channels=3,
                                     resize=resize, validation_split=0.1, test_split=0.5)
    settings = ImageSettings((16, 16), 3, resize_mode=resize)
    one_by_one = {prepare(tf.constant(image), settings).numpy().tobytes() for image in x}
    seen = 0
    for images, _ in test:
        for image in images.numpy():
            assert image.tobytes() in one_by_one
            seen += 1
    assert seen == info.split_sizes["test"] > 500
    assert int(train.cardinality()) == -(-info.split_sizes["train"] // 64)  # the count survives the batching


def test_augmentation_mixes_one_hot_labels():
    augment = build_augmentation(16, 10, flip=True, crop_padding=0.125, rand_augment=0.5,
                                 mixup=0.8, cutmix=1.0, seed=1)
    images = tf.random.uniform((8, 16, 16, 3), 0, 255, seed=0)
    labels = tf.one_hot(tf.range(8), 10)
    out_x, out_y = augment(images, labels)
    assert out_x.shape == images.shape
    assert float(tf.reduce_min(out_x)) >= 0 and float(tf.reduce_max(out_x)) <= 255
    np.testing.assert_allclose(tf.reduce_sum(out_y, 1), np.ones(8), rtol=1e-5)
    assert np.any(np.max(out_y, 1) < 0.999)  # some labels were mixed


@pytest.mark.parametrize("name", ["digits", "strong"])
def test_a_batch_seed_decides_the_augmentation_alone(name):
    from keras_vit.augment import augmentation_options

    augment = build_augmentation(16, 10, seed=0, **augmentation_options(name))
    images = tf.random.uniform((8, 16, 16, 3), 0, 255, seed=1)
    labels = tf.one_hot(tf.range(8), 10)
    first = augment(images, labels, seed=tf.constant([3, 0]))
    other = augment(images, labels, seed=tf.constant([4, 0]))
    augment(images, labels)  # the layers' own generators move on
    again = augment(images, labels, seed=tf.constant([3, 0]))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], other[0])


def test_seeded_pipelines_augment_alike_and_differ_by_epoch_and_seed():
    def epochs(seed, count=2):
        batches = tf.data.Dataset.from_tensor_slices(
            (np.random.default_rng(2).uniform(0, 255, (32, 16, 16, 1)).astype("float32"),
             tf.one_hot(tf.range(32) % 10, 10))).batch(8)
        ds = augment_batches(batches, build_augmentation(16, 10, translate=0.2, rotate=0.1, mixup=0.2), seed)
        return [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(count)]

    first, second = epochs(0), epochs(0)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.allclose(first[0], first[1])  # each pass draws new transformations
    assert not np.allclose(first[0], epochs(1, count=1)[0])


@pytest.mark.parametrize("seed", [1.5, "0", True, -1, 2**32 - 1])
def test_augment_batches_rejects_a_bad_seed_by_name(seed):
    batches = tf.data.Dataset.from_tensor_slices((np.zeros((4, 8, 8, 1), "float32"), np.zeros(4))).batch(2)
    with pytest.raises(ValueError, match=r"`seed` must be None or an int\. Received: seed=.* \(accepted: None, or 0 to 4294967294\)"):
        augment_batches(batches, build_augmentation(8, 10, translate=0.1), seed)


def test_named_augmentation_applies_to_train_only():
    train, val, test, _ = load_data("digits", 16, 64, augment="digits", seed=0)
    plain = load_data("digits", 16, 64, seed=0)
    np.testing.assert_array_equal(batches(test)[0], batches(plain[2])[0])
    # the same shuffled batch differs once augmented
    assert not np.allclose(next(iter(train))[0], next(iter(plain[0]))[0])


def test_rand_augment_equalizes_in_tf_data_as_keras_does():
    # keras_vit's RandAugment swaps in an Equalization whose histogram is one
    # bincount in tf.data on every backend (Keras' own, under JAX, is a
    # 256-step loop in the graph); the images must be Keras' images. In
    # tf.data the layer runs in TensorFlow whatever the backend: this file's
    # TensorFlow run covers them all.
    (rand_augment,) = build_augmentation(8, 10, rand_augment=0.5).steps
    assert isinstance(rand_augment.equalization, keras.layers.Equalization)
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1)).astype("float32")
    keras_layer = keras.layers.Equalization(value_range=(0, 255))
    got, want = ([x.numpy() for x in tf.data.Dataset.from_tensors(images).map(lambda x: layer(x, training=True))][0]
                 for layer in (rand_augment.equalization, keras_layer))
    assert not np.array_equal(got, images)
    np.testing.assert_array_equal(got, want)


def test_rand_augment_runs_only_the_drawn_operations_and_gives_keras_images():
    # keras_vit's RandAugment computes, in tf.data, only the operations it drew
    # (Keras' own computes all 11 on the batch and keeps one); from the same
    # draws its images must be Keras' images, whichever operations are drawn.
    from keras_vit.augment import _call_seeded

    (ours,) = build_augmentation(8, 10, rand_augment=0.5, rand_augment_ops=2).steps
    theirs = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5)
    images = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3)).astype("float32")
    seeds = tf.data.Dataset.range(16).map(lambda i: tf.stack([i, tf.constant(0, tf.int64)]))
    got, want = ([x.numpy() for x in seeds.map(lambda seed: _call_seeded(layer, seed, 0, tf.constant(images)))]
                 for layer in (ours, theirs))
    assert type(ours).transform_images is not keras.layers.RandAugment.transform_images
    assert sum(not np.array_equal(x, images) for x in got) >= 8  # the draws changed most batches
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_augmentation_rejects_int_labels_for_mixup():
    with pytest.raises(ValueError, match="one-hot"):
        load_data("digits", 16, 8, augment={"mixup": 0.2}, label_mode="int")


def write_png(path, value=128, size=(6, 5), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value // 2, 0)).save(path)


def test_image_folder_skips_bad_files_with_a_warning(tmp_path):
    for cls in ("cat", "dog"):
        for i in range(5):
            write_png(tmp_path / cls / f"{i}.png", 40 if cls == "cat" else 220)
    (tmp_path / "cat" / "empty.png").write_bytes(b"")
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "dog" / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match="3 unreadable") as record:
        train, val, test, info = load_data(tmp_path, 8, 4, validation_split=0.2, test_split=0.2)
    message = str(record[0].message)
    assert "empty.png (zero bytes)" in message and "broken.png" in message and "notes.txt" in message
    assert info.class_names == ["cat", "dog"] and info.channels == 3
    assert info.split_sizes == {"train": 6, "validation": 2, "test": 2}
    images, labels = batches(train)
    assert images.shape == (6, 8, 8, 3)
    # dark images are cats (label 0), bright ones dogs
    np.testing.assert_array_equal(labels.argmax(1), (images[:, 0, 0, 0] > 128).astype(int))
    with pytest.raises(ValueError, match="broken.png"):
        load_data(tmp_path, 8, 4, on_bad_files="error")


def test_image_folder_with_split_folders_and_grayscale(tmp_path):
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        for cls in ("a", "b"):
            for i in range(n):
                write_png(tmp_path / split / cls / f"{i}.png", 90, mode="L")
    train, val, test, info = load_data(tmp_path, 8, 16, channels=1)
    assert info.split_sizes == {"train": 8, "validation": 4, "test": 6}
    assert batches(test)[0].shape == (6, 8, 8, 1)


@pytest.mark.parametrize("layout, match", [
    ("missing", "does not exist"),
    ("no_classes", "no class sub-folders"),
    ("empty_class", "holds no readable images"),
])
def test_image_folder_errors(tmp_path, layout, match):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "empty_class":
        write_png(root / "a" / "0.png")
        (root / "b").mkdir()
    with pytest.raises(ValueError, match=match):
        load_data(root, 8, 4)


def test_npz_file_with_own_test_split(tmp_path):
    x, y = indexed_arrays(40)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:],
             class_names=np.array(["r", "g", "b"]))
    train, val, test, info = load_data(str(path), 4, 8, validation_split=0.1, label_mode="int")
    assert info.class_names == ["r", "g", "b"]
    assert info.split_sizes == {"train": 27, "validation": 3, "test": 10}
    assert set(batches(test)[0][:, 0, 0, 0].astype(int)) == set(range(30, 40))


@pytest.mark.parametrize("kwargs, match", [
    (dict(source=(np.zeros((5, 4, 4)), np.zeros(4, int))), "different lengths: 5 images and 4 labels"),
    (dict(source=(np.zeros((3, 4, 4)), np.array([0, 1, 5])), num_classes=3), "label 5 at index 2"),
    (dict(source=(np.zeros((3, 4, 4)), np.array([0.5, 1, 0]))), "integer class indices"),
    (dict(label_mode="sparse"), "label_mode"),
    (dict(image_size=0), "image_size"),
    (dict(batch_size=-1), "batch_size"),
    (dict(validation_split=1.5), "validation_split"),
    (dict(augment="wild"), "augment"),
    (dict(channels=2), "channels"),
    (dict(source=3), "source"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    kwargs = {"source": "digits", "image_size": 8, "batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        load_data(**kwargs)


def test_unknown_tfds_name_fails_fast():
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_dataset_xyz'"):
        load_data("no_such_dataset_xyz", 8, 4)


def test_tfds_dataset_not_downloaded_fails_without_network(tmp_path):
    with pytest.raises(ValueError, match="not prepared") as err:
        load_data("mnist", 8, 4, data_dir=str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_tfds_path_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        train, val, test, info = load_data(
            "tfds:mnist", 16, 4, channels=3, download=True,
            splits={"train": "train", "test": "test"})
        x, y = next(iter(train))
    assert x.shape == (4, 16, 16, 3) and y.shape == (4, 10)
    assert info.num_classes == 10 and info.source == "tfds:mnist"
    assert val is not None and info.split_sizes["test"] == 12


def test_augmentation_strengths():
    from keras_vit.data import augmentation_options

    assert augmentation_options(None) == {} and augmentation_options(0.0) == {}
    strong = augmentation_options(1.0)
    assert strong["rand_augment"] == 1.0 and strong["cutmix"] == 1.0 and strong["flip"]
    assert augmentation_options(0.5)["mixup"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="augment"):
        augmentation_options(1.5)
    with pytest.raises(ValueError, match="rand_augment"):
        build_augmentation(8, 2, rand_augment=2.0)


@pytest.fixture(scope="module")
def train_only_tfds(tmp_path_factory):
    """A real, prepared TFDS dataset on disk with only a "train" split."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    data_dir = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(0)
    examples = {"image": rng.integers(0, 256, (40, 8, 8, 1)).astype("uint8"), "label": np.arange(40) % 2}
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(8, 8, 1)), "label": tfds.features.ClassLabel(names=["a", "b"])})
    tfds.dataset_builders.store_as_tfds_dataset(
        name="keras_vit_train_only", version="1.0.0", config="small", features=features,
        split_datasets={"train": tf.data.Dataset.from_tensor_slices(examples)}, data_dir=str(data_dir))
    return str(data_dir)


def test_tfds_dataset_with_only_a_train_split_carves_test_and_validation(train_only_tfds):
    train, val, test, info = load_data("tfds:keras_vit_train_only/small", 8, 4, data_dir=train_only_tfds)
    sizes = info.split_sizes
    assert sum(sizes.values()) == 40
    assert sizes["test"] == 8  # test_split=0.2, taken first
    assert sizes["validation"] >= 2 and val is not None and test is not None
    _, _, _, half = load_data("tfds:keras_vit_train_only/small", 8, 4, data_dir=train_only_tfds, test_split=0.5,
                              validation_split=0)
    assert half.split_sizes == {"train": 20, "validation": 0, "test": 20}


def test_tfds_prefix_with_a_config_or_version_goes_to_tfds(train_only_tfds):
    _, _, _, info = load_data("tfds:keras_vit_train_only/small:1.0.0", 8, 4, data_dir=train_only_tfds)
    assert info.source == "tfds:keras_vit_train_only/small:1.0.0" and info.num_classes == 2
