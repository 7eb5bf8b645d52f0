"""Distil an ImageNet student (res34_res18 or res50_mv1) with the authors' recipe.

    python examples/distill_imagenet.py --preset res34_res18 --method gdkd \
        --teacher-weights resnet34-b627a593.pth --data-dir ~/data/imagenet \
        --output runs/res34_res18_gdkd

`--data-dir` holds train/<class>/*.JPEG and val/<class>/*.JPEG, or is a tensorflow-datasets
data_dir with imagenet2012 prepared (add --manual-dir for the manual download). With several
GPUs the run is data-parallel over all of them (global batch 512, as the preset says).
The same as `keras-gdkd distill ...`; every option: --help.
"""

import sys

from keras_gdkd.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--preset" or a.startswith("--preset=") for a in argv):
        argv = ["--preset", "res34_res18", *argv]
    sys.exit(main(["distill", *argv]))
