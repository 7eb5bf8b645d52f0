"""Train a teacher with cross-entropy (CIFAR-100: SGD 0.05, 240 epochs, decay at 150/180/210).

    python examples/train_teacher.py --model resnet32x4 --data-dir ~/data/cifar100 \
        --output runs/teacher_resnet32x4 [--strong-augment]

The same as `keras-gdkd train-teacher ...`; every option: --help. The run's model.keras is the
teacher for `distill --teacher-weights`.
"""

import sys

from keras_gdkd.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-teacher", *sys.argv[1:]]))
