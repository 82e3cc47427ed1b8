"""Write a folder of image files for timing `cifarnet predict` on real photos.

Each file is one CIFAR test image, upscaled (bicubic) to --size pixels square so that predict
has real decoding and resizing work to do, saved alternately as PNG and JPEG (quality 90):
img_0000.jpg, img_0001.png, ... The first --count test images are used, in order, so two runs
write the same folder.

    python benchmarks/make_photo_folder.py OUT_DIR --data-dir DATA [--count 1000] [--size 128]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from cifarnet.data.datasets import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", default="cifar100")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128, help="side of each file in pixels")
    args = parser.parse_args()

    data = load_dataset(args.dataset, args.data_dir, download=False)
    if not 0 < args.count <= len(data.test_images):
        parser.error(f"--count must be between 1 and {len(data.test_images)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    # (N, 3, 32, 32) uint8 -> (N, 32, 32, 3), the layout PIL reads.
    pixels = data.test_images[: args.count].permute(0, 2, 3, 1).contiguous().numpy()
    for index, image in enumerate(pixels):
        photo = Image.fromarray(image).resize((args.size, args.size), Image.BICUBIC)
        suffix = "jpg" if index % 2 == 0 else "png"
        options = {"quality": 90} if suffix == "jpg" else {}
        photo.save(args.out_dir / f"img_{index:04d}.{suffix}", **options)
    print(f"wrote {args.count} files ({args.size}x{args.size}) to {args.out_dir}")


if __name__ == "__main__":
    main()
