"""Data pipelines (tf.data) for CIFAR-100 and ImageNet, usable from every Keras backend.

TensorFlow is imported here and nowhere else in `keras_gdkd`. Training streams are
deterministic and resumable: shuffle order and every augmentation draw derive from
(seed, epoch, example index) through stateless ops; see `TrainData`.
"""

from keras_gdkd.data.augment import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    StrongAugment,
    imagenet_eval_image,
    imagenet_train_image,
    normalize,
    random_resized_crop_window,
)
from keras_gdkd.data.cifar100 import cifar100_test, cifar100_train, load_cifar100
from keras_gdkd.data.imagenet import imagenet_train, imagenet_val
from keras_gdkd.data.pipeline import TrainData
from keras_gdkd.data.sources import (
    clear_cache,
    list_image_folder,
    load_cifar100_python,
    load_cifar100_tfds,
)

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "StrongAugment",
    "TrainData",
    "cifar100_test",
    "cifar100_train",
    "clear_cache",
    "imagenet_eval_image",
    "imagenet_train",
    "imagenet_train_image",
    "imagenet_val",
    "list_image_folder",
    "load_cifar100",
    "load_cifar100_python",
    "load_cifar100_tfds",
    "normalize",
    "random_resized_crop_window",
]
