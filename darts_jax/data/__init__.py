"""Data: image sets (`images`: CIFAR-10/100 through tfds or files, digits, .npz), ImageNet's
host pipeline (`imagenet`), text corpora (`text`: PTB, WikiText-2) and on-device
augmentation (`augment`)."""
