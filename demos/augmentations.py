"""Show what each augmentation in minienc.data does to real digits: one row per augmentation,
the same digits in every row, plus the larger-canvas digits that patch-based methods train on.

    python demos/augmentations.py                 # writes runs/augmentations/*.png
    python demos/augmentations.py --data cifar10:~/cifar-10-batches-bin   # the colour ones too
"""
import argparse
import os

import minienc
from common import DemoParser
from minienc import data as D
from minienc.eval import plot_image_grid


def main():
    parser = DemoParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits", help=D.DATA_HELP)
    parser.add_argument("--count", type=int, default=10, help="images per row")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("runs", "augmentations"))
    args = parser.parse_args()
    device = args.device or minienc.get_device()
    minienc.manual_seed(args.seed)

    data = D.load_dataset(args.data, seed=args.seed)
    # one image of each class, so every digit shows up once per row
    first = [int((data.y_test == c).nonzero()[0][0]) for c in range(data.num_classes)]
    images = minienc.tensor(data.x_test[first][:args.count], device=device)
    augmentations = [
        ("RandomCrop(pad 2)", D.RandomCrop(padding=2)),
        ("RandomResizedCrop", D.RandomResizedCrop(scale=(0.5, 1.0))),
        ("RandomAffine(15°)", D.RandomAffine(degrees=15, translate=0.1, scale=(0.9, 1.1), shear=10)),
        ("GaussianNoise(0.15)", D.GaussianNoise(0.15, clip=(0.0, 1.0))),
        ("RandomErasing", D.RandomErasing(p=1.0)),
        ("BrightnessContrast", D.BrightnessContrast(0.5, 0.5)),
        ("contrastive view 1", D.contrastive_augment()),
        ("contrastive view 2", D.contrastive_augment()),
        ("GaussianBlur(5)", D.GaussianBlur(5, p=1.0)),
        ("Solarize(0.5)", D.Solarize(0.5, p=1.0)),
        ("HorizontalFlip", D.RandomHorizontalFlip(p=1.0)),
    ]
    if images.shape[1] == 3:   # colour images (cifar10:PATH): the colour augmentations too
        augmentations += [
            ("ColorJitter(0.4,0.4,0.4,0.1)", D.ColorJitter(0.4, 0.4, 0.4, 0.1)),
            ("hue +-0.5", D.ColorJitter(0, 0, 0, 0.5)),
            ("Grayscale", D.RandomGrayscale(p=1.0)),
            ("SimCLR view 1", D.simclr_augment(images.shape[-1])),
            ("SimCLR view 2", D.simclr_augment(images.shape[-1])),
        ]
    rows, titles = [images], ["original"]
    for title, aug in augmentations:
        rows.append(aug(images))
        titles.append(title)
    path = plot_image_grid(rows, os.path.join(args.out, "augmentations.png"), row_titles=titles,
                           title=f"augmentations on {data.name} (seed {args.seed}, device {device})")
    print("saved", path)

    canvas = D.load_digits_canvas(size=32, seed=args.seed)
    first = [int((canvas.y_test == c).nonzero()[0][0]) for c in range(10)]
    second = [int((canvas.y_test == c).nonzero()[0][1]) for c in range(10)]
    path = plot_image_grid([canvas.x_test[first], canvas.x_test[second]],
                           os.path.join(args.out, "digits_canvas.png"), row_titles=["canvas 32", "canvas 32"],
                           title="load_digits_canvas(size=32): real digits, random scale/rotation/position")
    print("saved", path)


if __name__ == "__main__":
    main()
