"""--data folder:PATH (minienc/data/folder.py): your own pictures in class subfolders, a
train/ + test/ pair, or loose (unlabeled); resized and centre-cropped; files that do not decode
are left out by name; every image demo trains on such a folder, labeled or not (issue 29)."""
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from demo_check import run_in_process
from test_demo_runs import IMAGE_DEMOS, PATCHES, QUICK

Image = pytest.importorskip("PIL.Image")

from minienc.data import UNLABELED, decode_picture, load_dataset, load_folder, subsample  # noqa: E402
from minienc.eval import Evaluator, evaluate_features, linear_probe  # noqa: E402

PER_CLASS = 24


def picture(rng, kind, width, height, colour=True):
    """A noisy picture whose class shows: 'bars' bright on top, 'blocks' bright on the left."""
    pixels = rng.uniform(0, 60, (height, width, 3))
    if kind == "bars":
        pixels[: height // 2] += 180
    else:
        pixels[:, : width // 2] += 180
    pixels = pixels.clip(0, 255).astype(np.uint8)
    return Image.fromarray(pixels if colour else pixels[..., 0])


def write_class_folder(root, seed=0, per_class=PER_CLASS):
    """bars/ and blocks/ of PNG and JPEG pictures of several sizes, one grey PNG among the colour
    ones, a truncated JPEG and a text file (passed over)."""
    rng = np.random.default_rng(seed)
    for kind in ("bars", "blocks"):
        os.makedirs(root / kind, exist_ok=True)
        for i in range(per_class):
            suffix = ".png" if i % 2 else ".jpg"
            picture(rng, kind, 20 + i, 18 + 2 * (i % 3)).save(root / kind / f"{i:03d}{suffix}")
    picture(rng, "bars", 24, 24, colour=False).save(root / "bars" / "grey.png")
    whole = (root / "blocks" / "000.jpg").read_bytes()
    (root / "blocks" / "corrupt.jpg").write_bytes(whole[: len(whole) // 3])
    (root / "bars" / "notes.txt").write_text("not a picture")
    return root


def write_loose_folder(root, count=48, seed=1):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for i in range(count):
        picture(rng, ("bars", "blocks")[i % 2], 22, 20).save(root / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    return write_class_folder(tmp_path_factory.mktemp("pictures"))


@pytest.fixture(scope="module")
def loose_folder(tmp_path_factory):
    return write_loose_folder(tmp_path_factory.mktemp("unlabeled"))


def test_a_class_folder_loads_split_and_names_the_corrupt_file(class_folder):
    with pytest.warns(UserWarning, match="corrupt.jpg"):
        data = load_folder(class_folder, image_size=16, seed=3)
    assert data.classes == ("bars", "blocks") and data.labeled and data.num_classes == 2
    assert [os.path.basename(p) for p, _ in data.skipped] == ["corrupt.jpg"]
    # one grey file among colour ones: colour, the grey one repeated into three channels
    assert data.x_train.shape[1:] == (3, 16, 16) and data.x_train.dtype == np.float32
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    counts = np.bincount(np.concatenate([data.y_train, data.y_test]))
    assert counts.tolist() == [PER_CLASS + 1, PER_CLASS]          # corrupt left out, grey kept
    # the stratified split: a quarter of each class, as the file list was before decoding
    # (of 25 files each; the corrupt file may have been drawn for the test)
    tested = np.bincount(data.y_test)
    assert tested[0] == round((PER_CLASS + 1) / 4) and tested[1] in (tested[0] - 1, tested[0])
    # the classes show: bars are bright on top, blocks on the left
    top = data.x_train[:, :, :8].mean(axis=(1, 2, 3)) - data.x_train[:, :, 8:].mean(axis=(1, 2, 3))
    assert (top[data.y_train == 0] > 0.3).all() and (top[data.y_train == 1] < 0.1).all()


def test_the_split_is_seeded(class_folder):
    def split(seed):
        with pytest.warns(UserWarning):
            data = load_folder(class_folder, image_size=8, seed=seed, progress=False)
        return data.x_test
    np.testing.assert_array_equal(split(0), split(0))
    assert not np.array_equal(split(0), split(1))


def test_a_grey_folder_has_one_channel_and_16_bit_files_are_scaled(tmp_path):
    for i, value in enumerate((0, 32768, 65535)):
        Image.fromarray(np.full((10, 12), value, np.uint16)).save(tmp_path / f"{i}.png")
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(tmp_path / "eight.png")
    assert Image.open(tmp_path / "2.png").mode.startswith("I")
    data = load_folder(tmp_path, image_size=4, test_fraction=0.5)
    assert data.image_shape == (1, 4, 4) and not data.labeled
    values = sorted(np.concatenate([data.x_train, data.x_test]).mean(axis=(1, 2, 3)).tolist())
    np.testing.assert_allclose(values, [0.0, 32768 / 65535, 1.0, 1.0], atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(width=st.integers(1, 40), height=st.integers(1, 40), size=st.integers(1, 12),
       colour=st.tuples(*[st.integers(0, 255)] * 3))
def test_decode_picture_resizes_and_keeps_a_flat_colour(width, height, size, colour):
    import io
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    buffer.seek(0)
    out = decode_picture(buffer, size, 3)
    assert out.shape == (3, size, size) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.broadcast_to(np.array(colour)[:, None, None] / 255, out.shape),
                               atol=1e-6)


def test_decode_picture_keeps_the_centre_square(tmp_path):
    """A 60 x 20 picture, red | green | blue thirds: its centre square is the green third."""
    pixels = np.zeros((20, 60, 3), np.uint8)
    pixels[:, :20, 0] = pixels[:, 20:40, 1] = pixels[:, 40:, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "thirds.png")
    out = decode_picture(tmp_path / "thirds.png", 10, 3)
    np.testing.assert_allclose(out[:, 1:-1, 1:-1].mean(axis=(1, 2)), [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(decode_picture(tmp_path / "thirds.png", 20, 3)[1], 1.0, atol=1e-6)


def test_a_train_and_test_pair_is_kept(tmp_path):
    write_class_folder(tmp_path / "train", per_class=6)
    write_class_folder(tmp_path / "test", per_class=3, seed=5)
    with pytest.warns(UserWarning, match="corrupt.jpg"):
        data = load_folder(tmp_path, image_size=8)
    assert np.bincount(data.y_test).tolist() == [4, 3] and np.bincount(data.y_train).tolist() == [7, 6]
    os.makedirs(tmp_path / "test" / "zebras")
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "zebras" / "z.png")
    with pytest.raises(ValueError, match=r"classes \['zebras'\] are not among the train classes"):
        load_folder(tmp_path, image_size=8)


def test_folders_that_cannot_be_a_dataset_are_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no pictures found"):
        load_folder(tmp_path)
    write_loose_folder(tmp_path / "mixed", count=2)
    write_loose_folder(tmp_path / "mixed" / "cats", count=2)
    with pytest.raises(ValueError, match="beside class subfolders"):
        load_folder(tmp_path / "mixed")
    os.makedirs(tmp_path / "broken")
    (tmp_path / "broken" / "a.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"none of its 1 picture files could be read, e\.g\. .*a\.png"):
        load_folder(tmp_path / "broken")


def test_a_folder_linked_into_itself_is_walked_once(tmp_path):
    """A link to a folder above it made os.walk go round until the depth limit: the 4 pictures
    of class a were read about 40 times each. A link to a picture still counts (it is a file of
    its class)."""
    write_loose_folder(tmp_path / "a", count=4)
    write_loose_folder(tmp_path / "b", count=4, seed=2)
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")
    os.symlink(tmp_path / "a" / "000.png", tmp_path / "b" / "linked.png")
    data = load_folder(tmp_path, image_size=4, test_fraction=0.5)
    assert np.bincount(np.concatenate([data.y_train, data.y_test])).tolist() == [4, 5]


def test_a_named_pipe_with_a_picture_name_is_passed_over_not_opened(tmp_path):
    """load_folder hung for ever on a pipe named pipe.png: opening a pipe waits for a writer.
    Checked on the listing, which opens nothing, so a regression fails here instead of hanging."""
    from minienc.data.folder import scan_folder
    write_loose_folder(tmp_path / "cats", count=2)
    os.mkfifo(tmp_path / "cats" / "pipe.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "cats" / "dangling.png")
    files, _, _ = scan_folder(tmp_path)
    names = sorted(os.path.basename(f) for f in files)
    assert names == ["000.png", "001.png", "dangling.png"]   # a dangling link is named later
    os.mkfifo(tmp_path / "cats" / "loose_pipe.png")
    files, _, _ = scan_folder(tmp_path / "cats")
    assert "loose_pipe.png" not in [os.path.basename(f) for f in files]


@pytest.mark.parametrize("splits", [("train",), ("test",), ("train", "val"), ("Train", "valid")])
def test_a_split_that_is_not_train_and_test_is_refused(tmp_path, splits):
    """photos/train/<class>/ without test/, or train/ + val/, was read as classes named "train"
    (and "val"), the real classes merged inside each: a dataset with no word of the mistake."""
    for split in splits:
        write_class_folder(tmp_path / split, per_class=2)
    with pytest.raises(ValueError, match=rf"^--data folder:.*: {splits[0]}/.* holds class subfolders, as a "
                                         r"split does, but a kept split must be train/ and test/"):
        load_folder(tmp_path, image_size=4)


def test_a_class_named_train_holding_pictures_is_still_a_class(tmp_path):
    write_loose_folder(tmp_path / "train", count=4)
    write_loose_folder(tmp_path / "bus", count=4, seed=2)
    assert load_folder(tmp_path, image_size=4, test_fraction=0.5).classes == ("bus", "train")


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": -1}, r"^load_folder: seed must be an integer >= 0, got -1"),
    ({"seed": 1.5}, r"^load_folder: seed must be an integer >= 0, got 1.5"),
    ({"seed": None}, r"^load_folder: seed must be an integer >= 0, got None"),
])
def test_load_folder_names_a_seed_it_cannot_use(loose_folder, kwargs, message):
    """A negative, fractional or missing seed leaked NumPy's SeedSequence errors."""
    with pytest.raises(ValueError, match=message):
        load_folder(loose_folder, image_size=4, **kwargs)


@pytest.mark.parametrize("path", [None, b"pictures", 3])
def test_load_folder_names_a_path_that_is_not_one(path):
    with pytest.raises(TypeError, match=r"^load_folder: path must be a folder's path"):
        load_folder(path)


def test_a_32_bit_picture_beyond_16_bits_is_left_out_by_name(tmp_path):
    """A 32-bit integer picture was scaled as a 16-bit one: values up to 1.5, outside the [0, 1]
    the docstring promises, with no word."""
    for i in range(4):
        Image.fromarray(np.full((6, 6), 1000 * i, np.int32)).save(tmp_path / f"{i}.tif")
    Image.fromarray(np.full((6, 6), 100000, np.int32)).save(tmp_path / "bright.tif")
    with pytest.warns(UserWarning, match=r"bright\.tif \(ValueError: pixel values 100000 to 100000 in "
                                         r"a mode I picture: only 8- and 16-bit pictures"):
        data = load_folder(tmp_path, image_size=4, test_fraction=0.5)
    assert len(data.skipped) == 1 and 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    os.remove(tmp_path / "0.tif")
    for i in range(1, 4):
        os.remove(tmp_path / f"{i}.tif")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"could not be read|could not be decoded"):
        load_folder(tmp_path, image_size=4, test_fraction=0.5)


def test_a_subset_is_chosen_before_decoding_as_subsample_would(loose_folder):
    early = load_folder(loose_folder, image_size=8, seed=2, max_train=10, max_test=5)
    late = subsample(load_folder(loose_folder, image_size=8, seed=2), max_train=10, max_test=5, seed=2)
    assert len(early.x_train) == 10 and len(early.x_test) == 5
    np.testing.assert_array_equal(early.x_train, late.x_train)
    np.testing.assert_array_equal(early.x_test, late.x_test)


def test_load_dataset_reads_a_folder_and_refuses_image_size_elsewhere(loose_folder):
    data = load_dataset(f"folder:{loose_folder}", image_size=12, max_train=20)
    assert data.image_shape == (3, 12, 12) and len(data.x_train) == 20 and data.name == "folder:unlabeled0"
    with pytest.raises(ValueError, match="--image-size resizes the pictures of --data folder"):
        load_dataset("digits", image_size=12)


def test_unlabeled_images_train_but_the_probes_say_there_are_no_labels(loose_folder):
    data = load_folder(loose_folder, image_size=8)
    assert not data.labeled and data.num_classes == 0 and "unlabeled" in repr(data)
    assert (data.y_train == UNLABELED).all() and len(data.x_test) == 12
    features = data.x_train.reshape(len(data.x_train), -1)
    record = evaluate_features("pixels", features, data.y_train,
                               data.x_test.reshape(len(data.x_test), -1), data.y_test, draws=2,
                               verbose=False)
    assert record["linear"] is record["fewshot"] is record["knn"] is None and record["rankme"] > 1
    with pytest.raises(ValueError, match="unlabeled"):
        linear_probe(features, data.y_train, features, data.y_train)
    result = Evaluator(lambda x: x.reshape(x.shape[0], -1), data, train_size=20, test_size=10)()
    assert np.isnan(result["knn"]) and np.isnan(result["fewshot"]) and result["rankme"] > 1


# ----- every image demo trains on a folder ----------------------------------------------------------

def run_on_folder(demo, folder, out, monkeypatch):
    flags, pictures = IMAGE_DEMOS[demo]
    patches = PATCHES["digits-canvas"] if demo in ("mae", "jepa", "lejepa") else []   # 4x4
    run_in_process(f"{demo}.py", "--data", f"folder:{folder}", "--image-size", "16", "--out", out,
                   *QUICK, *flags, *patches, monkeypatch=monkeypatch)
    for name in pictures:
        assert (out / f"{name}.png").stat().st_size > 1000, f"{demo}: {name}.png"
    return json.loads((out / "results.json").read_text()), json.loads((out / "config.json").read_text())


@pytest.mark.filterwarnings("ignore:load_folder. left out 1 file")
@pytest.mark.parametrize("demo", sorted(IMAGE_DEMOS))
def test_every_image_demo_trains_on_a_class_folder(demo, class_folder, tmp_path, monkeypatch):
    records, config = run_on_folder(demo, class_folder, tmp_path, monkeypatch)
    assert 0.0 <= records[0]["fewshot"] <= 1.0 and records[0]["dim"] > 0
    assert config["data"]["image_shape"] == [3, 16, 16] and config["data"]["classes"] == 2


@pytest.mark.parametrize("demo", ["simclr", "mae", "jepa"])
def test_image_demos_train_on_an_unlabeled_folder(demo, loose_folder, tmp_path, monkeypatch, capsys):
    records, config = run_on_folder(demo, loose_folder, tmp_path, monkeypatch)
    assert records[0]["fewshot"] is None and records[0]["rankme"] > 0
    assert config["data"]["classes"] == 0
    assert "no labels" in capsys.readouterr().out
