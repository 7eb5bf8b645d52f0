"""Distil a CIFAR-100 student with the authors' recipe (a preset of the paper's table).

    python examples/distill_cifar100.py --preset res32x4_res8x4 --method gdkd \
        --teacher-weights cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth \
        --data-dir ~/data/cifar100 --output runs/res32x4_res8x4_gdkd

The same as `keras-gdkd distill ...`; every option: --help. Re-run to resume.
"""

import sys

from keras_gdkd.cli import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
