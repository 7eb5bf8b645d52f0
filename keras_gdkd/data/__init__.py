"""Data pipelines (tf.data) for CIFAR-100 and ImageNet, usable from every Keras backend.

TensorFlow is imported in this sub-package and nowhere else in `keras_gdkd`. Training
streams are deterministic and resumable: shuffle order and every augmentation draw derive
from (seed, epoch, example index) through stateless ops; see `TrainData`.

Names are imported on first use, so `resolve_source`, `check_image_folder`,
`check_data` and the class-list helpers work without importing TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# name -> submodule that defines it
_EXPORTS = {
    "CIFAR100_MEAN": "augment",
    "CIFAR100_STD": "augment",
    "IMAGENET_MEAN": "augment",
    "IMAGENET_STD": "augment",
    "StrongAugment": "augment",
    "imagenet_eval_image": "augment",
    "imagenet_train_image": "augment",
    "normalize": "augment",
    "random_resized_crop_window": "augment",
    "DataProblem": "checks",
    "DataReport": "checks",
    "check_data": "checks",
    "check_image_folder": "checks",
    "find_prepared_tfds": "checks",
    "resolve_source": "checks",
    "tfds_default_data_dir": "checks",
    "cifar100_test": "cifar100",
    "cifar100_train": "cifar100",
    "load_cifar100": "cifar100",
    "imagenet_train": "imagenet",
    "imagenet_val": "imagenet",
    "TrainData": "pipeline",
    "DataNotFoundError": "sources",
    "clear_cache": "sources",
    "imagenet_class_names": "sources",
    "list_image_folder": "sources",
    "load_cifar100_python": "sources",
    "load_cifar100_tfds": "sources",
    "read_cifar100_python": "sources",
    "write_demo_cifar100": "testing",
}

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DataNotFoundError",
    "DataProblem",
    "DataReport",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "StrongAugment",
    "TrainData",
    "check_data",
    "check_image_folder",
    "cifar100_test",
    "cifar100_train",
    "clear_cache",
    "find_prepared_tfds",
    "imagenet_class_names",
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
    "read_cifar100_python",
    "resolve_source",
    "tfds_default_data_dir",
    "write_demo_cifar100",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
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
    from keras_gdkd.data.checks import (
        DataProblem,
        DataReport,
        check_data,
        check_image_folder,
        find_prepared_tfds,
        resolve_source,
        tfds_default_data_dir,
    )
    from keras_gdkd.data.cifar100 import cifar100_test, cifar100_train, load_cifar100
    from keras_gdkd.data.imagenet import imagenet_train, imagenet_val
    from keras_gdkd.data.pipeline import TrainData
    from keras_gdkd.data.sources import (
        DataNotFoundError,
        clear_cache,
        imagenet_class_names,
        list_image_folder,
        load_cifar100_python,
        load_cifar100_tfds,
        read_cifar100_python,
    )
    from keras_gdkd.data.testing import write_demo_cifar100
