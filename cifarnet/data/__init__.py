"""The data layer: dataset files, the validation split, batched augmentation and the loader."""
