"""Your own images: a folder of picture files, read with Pillow into an `ImageDataset`.

The layout is torchvision's ImageFolder: one subfolder per class, the class names sorted give
the labels 0, 1, 2, ... (subfolders may nest; hidden files and files that are not pictures by
their extension are passed over)

    photos/cat/001.jpg  photos/cat/002.png  photos/dog/x.jpeg ...

and two more layouts around it:
  - photos/train/<class>/... and photos/test/<class>/...: that split is kept as it is (the test
    classes must be among the train classes); otherwise a seeded, stratified split
    (`stratified_split`) keeps `test_fraction` of each class for the test;
  - pictures straight in the folder, no subfolders: an UNLABELED dataset, every label
    `UNLABELED` (-1). The objectives train on it; the probes and k-NN report that there are no
    labels (see minienc.eval), and RankMe, the embedding std and the pictures are as usual.

Every picture is resized so its shorter side is `image_size` and centre-cropped to a square
(torchvision's Resize + CenterCrop, done by Pillow in one resample of the centre square),
bilinear with antialiasing; JPEGs are decoded at a reduced scale first when they are much
larger (Pillow's draft mode). Images are grey (C = 1) when every file is grey, else colour
(C = 3; grey files are repeated into the three channels, alpha is dropped); pixel values are
float32 in [0, 1] (16-bit grey files are scaled by 1/65535).

Memory: the file headers are read first (mode, size: cheap), the train and test arrays are then
allocated once at their final size and each picture is decoded straight into its row, so no
decoded copy of the dataset exists twice. A file that cannot be decoded -- not a picture,
truncated, corrupt -- is left out, named in a warning and listed in `dataset.skipped`.
"""
import os
import warnings

import numpy

from .datasets import UNLABELED, ImageDataset, stratified_split, stratified_subset, subset_limits

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pbm")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L")
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")   # folders a split is often kept in
SHOW_SKIPPED = 10   # files named in the warning (all of them are in dataset.skipped)
PROGRESS_FROM = 256   # pictures from which decoding shows a progress bar (fewer load in a blink)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("--data folder:PATH decodes pictures with Pillow: pip install -e "
                          "'.[images]' or pip install pillow") from None
    return Image


# ----- finding the files --------------------------------------------------------------------------

def _visible(names):
    return sorted(n for n in names if not n.startswith("."))


def _pictures_under(folder):
    """Every picture file under `folder`, at any depth, in sorted order. Linked folders are
    followed, each real folder once: a link to a folder above it (a loop) would otherwise be
    walked until the system's depth limit, every picture counted dozens of times."""
    found, walked = [], set()
    for parent, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(parent)
        if real in walked:
            dirs[:] = []
            continue
        walked.add(real)
        dirs[:] = _visible(dirs)
        found += [p for p in (os.path.join(parent, f) for f in _visible(files)) if _picture_file(p)]
    return found


def _picture_file(path):
    """A picture's name on a regular file, or on a link to nothing (named later, as a file that
    does not decode). A pipe, socket or device so named is passed over: opening a pipe waits
    for a writer forever (load_folder hung on one named pipe.png)."""
    return path.lower().endswith(IMAGE_EXTENSIONS) and (os.path.isfile(path)
                                                        or not os.path.exists(path))


def scan_folder(folder, classes=None):
    """(files, labels int64, class names) of one folder: class subfolders, or loose pictures
    (then labels are all UNLABELED and the class names empty). `classes`: the names to number
    the subfolders by (the train split's), refusing a class not among them."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--data folder:{folder}: not a folder")
    entries = _visible(os.listdir(folder))
    loose = [e for e in entries if _picture_file(os.path.join(folder, e))]
    subfolders = {e: _pictures_under(os.path.join(folder, e)) for e in entries
                  if os.path.isdir(os.path.join(folder, e))}
    subfolders = {name: files for name, files in subfolders.items() if files}
    if loose and subfolders:
        raise ValueError(f"--data folder:{folder}: holds pictures ({loose[0]}, ...) beside class "
                         f"subfolders ({next(iter(subfolders))}/, ...): put every picture in its "
                         f"class's subfolder, or all of them loose for an unlabeled dataset")
    if not loose and not subfolders:
        raise ValueError(f"--data folder:{folder}: no pictures found (looked for "
                         f"{', '.join(IMAGE_EXTENSIONS)} in it and in its subfolders)")
    if loose:
        files = [os.path.join(folder, e) for e in loose]
        return files, numpy.full(len(files), UNLABELED, numpy.int64), ()
    names = tuple(classes) if classes is not None else tuple(sorted(subfolders))
    unknown = sorted(set(subfolders) - set(names))
    if unknown:
        raise ValueError(f"--data folder:{folder}: classes {unknown} are not among the train "
                         f"classes {list(names)}")
    files, labels = [], []
    for label, name in enumerate(names):
        found = subfolders.get(name, [])
        files += found
        labels += [label] * len(found)
    return files, numpy.asarray(labels, numpy.int64), names


# ----- decoding -----------------------------------------------------------------------------------

def _modes(files, Image):
    """{path: Pillow mode} from the headers, and [(path, reason)] for files that do not open."""
    modes, failed = {}, []
    for path in files:
        try:
            with Image.open(path) as image:
                modes[path] = image.mode
        except Exception as exc:   # Pillow raises many kinds (UnidentifiedImageError, OSError, ...)
            failed.append((path, _reason(exc)))
    return modes, failed


def _reason(exc):
    return f"{type(exc).__name__}: {exc}"


def decode_picture(path, image_size, channels, Image=None):
    """One picture file as float32 (channels, image_size, image_size) in [0, 1]: its shorter side
    resized to image_size and the centre cropped (one bilinear resample of the centre square)."""
    Image = Image or _pillow()
    with Image.open(path) as image:
        image.draft("RGB" if channels == 3 else "L", (image_size, image_size))   # JPEG only
        scale = 1.0 / 65535.0 if image.mode in SIXTEEN_BIT_MODES else 1.0 / 255.0
        target = "RGB" if channels == 3 else ("F" if image.mode in SIXTEEN_BIT_MODES else "L")
        mode, image = image.mode, image.convert(target)       # decodes the file (truncation is found here)
        if target == "F":   # 16-bit grey read as 32-bit ints: a 32-bit file may hold more
            low, high = image.getextrema()
            if low < 0 or high > 65535:
                raise ValueError(f"pixel values {low:g} to {high:g} in a mode {mode} picture: "
                                 f"only 8- and 16-bit pictures (0 to 65535) are read")
        w, h = image.size
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box)
        pixels = numpy.asarray(image, dtype=numpy.float32) * numpy.float32(scale)
    return pixels.reshape(image_size, image_size, channels).transpose(2, 0, 1)


def _decode_into(files, out, channels, Image, bar):
    """Decode `files` into the rows of `out` in order, a failed file's row taken by the next
    (so the kept rows stay together at the top). Returns (kept indices, [(path, reason)])."""
    kept, failed = [], []
    for i, path in enumerate(files):
        try:
            out[len(kept)] = decode_picture(path, out.shape[-1], channels, Image)
            kept.append(i)
        except Exception as exc:
            failed.append((path, _reason(exc)))
        bar.update(1)
    return numpy.asarray(kept, numpy.int64), failed


# ----- the dataset --------------------------------------------------------------------------------

def _refuse_a_lone_split(root, path):
    """photos/train/<class>/... without photos/test/ (or with val/ instead) would be read as one
    class named "train", every class inside it merged: a dataset with no word of what went wrong."""
    if not os.path.isdir(root):
        return
    splits = [e for e in _visible(os.listdir(root)) if e.lower() in SPLIT_NAMES
              and os.path.isdir(os.path.join(root, e))
              and any(os.path.isdir(os.path.join(root, e, f)) for f in _visible(os.listdir(os.path.join(root, e))))]
    if splits:
        raise ValueError(f"--data folder:{path}: {', '.join(s + '/' for s in splits)} holds class "
                         f"subfolders, as a split does, but a kept split must be train/ and "
                         f"test/ side by side; read as it is, each would be one class with its "
                         f"classes merged. Name the folders train/ and test/, or move the class "
                         f"folders up into {path} for a seeded split")


def load_folder(path, image_size=32, test_fraction=0.25, seed=0, max_train=None, max_test=None,
                progress=True):
    """An `ImageDataset` from a folder of pictures (layouts in the module docstring), every
    picture float32 (C, image_size, image_size) in [0, 1]; `dataset.classes` holds the class
    names (empty when unlabeled), `dataset.skipped` the (path, reason) of each file left out.
    `max_train` / `max_test` keep a seeded, stratified subset of the files (`subsample`'s), chosen
    before anything is decoded. `progress`: a progress bar while decoding (tqdm)."""
    from ..checks import non_negative_int, positive_int
    from ..progress import progress_bar
    Image = _pillow()
    if not isinstance(path, (str, os.PathLike)) or isinstance(os.fspath(path), bytes):
        raise TypeError(f"load_folder: path must be a folder's path (str or os.PathLike), got "
                        f"{type(path).__name__} {path!r}")
    positive_int("load_folder", "image_size", image_size)
    non_negative_int("load_folder", "seed", seed)
    max_train, max_test = subset_limits("load_folder", max_train, max_test)
    root = os.path.expanduser(path)
    pair = [os.path.join(root, s) for s in ("train", "test")]
    if not all(os.path.isdir(p) for p in pair):
        _refuse_a_lone_split(root, path)
    if all(os.path.isdir(p) for p in pair):
        train_files, y_train, classes = scan_folder(pair[0])
        test_files, y_test, _ = scan_folder(pair[1], classes)
        if (y_train[0] == UNLABELED) != (y_test[0] == UNLABELED):
            raise ValueError(f"--data folder:{path}: train/ and test/ must both have class "
                             f"subfolders or both hold loose pictures")
    else:
        files, labels, classes = scan_folder(root)
        train, test = stratified_split(labels, test_fraction, seed)
        train_files, y_train = [files[i] for i in train], labels[train]
        test_files, y_test = [files[i] for i in test], labels[test]
    keep_train = stratified_subset(y_train, max_train or len(y_train), seed)
    keep_test = stratified_subset(y_test, max_test or len(y_test), seed + 1)
    train_files, y_train = [train_files[i] for i in keep_train], y_train[keep_train]
    test_files, y_test = [test_files[i] for i in keep_test], y_test[keep_test]
    modes, skipped = _modes(train_files + test_files, Image)
    if not modes:
        raise ValueError(f"--data folder:{path}: none of its {len(skipped)} picture files could "
                         f"be read, e.g. {skipped[0][0]} ({skipped[0][1]})")
    channels = 1 if all(m in GREY_MODES for m in modes.values()) else 3
    arrays = []
    with progress_bar(len(modes), progress and len(modes) >= PROGRESS_FROM, unit="image") as bar:
        for files, labels in ((train_files, y_train), (test_files, y_test)):
            readable = [i for i, f in enumerate(files) if f in modes]
            x = numpy.empty((len(readable), channels, image_size, image_size), numpy.float32)
            kept, failed = _decode_into([files[i] for i in readable], x, channels, Image, bar)
            skipped += failed
            arrays += [x[:len(kept)], labels[readable][kept]]
    if skipped:
        shown = "; ".join(f"{p} ({reason})" for p, reason in skipped[:SHOW_SKIPPED])
        more = f"; and {len(skipped) - SHOW_SKIPPED} more" if len(skipped) > SHOW_SKIPPED else ""
        warnings.warn(f"load_folder: left out {len(skipped)} file(s) that could not be decoded: "
                      f"{shown}{more}", stacklevel=2)
    for name, x in (("train", arrays[0]), ("test", arrays[2])):
        if len(x) == 0:
            why = (f"{len(skipped)} file(s) could not be decoded, named in the warning" if skipped
                   else f"too few pictures for a {test_fraction:.0%} test split?")
            raise ValueError(f"--data folder:{path}: no readable {name} pictures ({why})")
    name = "folder:" + os.path.basename(os.path.normpath(root))
    return ImageDataset(*arrays, name, classes=classes, skipped=tuple(skipped))
