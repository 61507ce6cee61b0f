"""FER2013 test accuracies the seed papers report, for side-by-side tables (their protocol, their hardware).

Both papers fine-tune ImageNet-pretrained backbones (seed 002 also trains at larger input sizes); ferkit's shipped
models are trained from scratch on a 2-core CPU, so the rows are context, not a like-for-like race.
"""

SEED_002_TABLE_II = {  # Pham, Vu, Tran 2020, Table II: (parameters x 1e6, accuracy %)
    "VGG19": (139.5, 70.80),
    "EfficientNet-B2b": (7.7, 70.80),
    "GoogLeNet": (5.6, 71.97),
    "ResNet34": (21.2, 72.41),
    "ResAttNet56": (29.0, 72.63),
    "Inception-v3": (25.1, 72.72),
    "BAM-ResNet50": (23.8, 73.14),
    "DenseNet121": (6.9, 73.16),
    "ResNet152": (58.1, 73.22),
    "CBAM-ResNet50": (28.5, 73.39),
    "ResMaskingNet": (142.9, 74.14),
}

SEED_001_TABLE_5 = {  # An, Liu, Zheng, Table 5: testing accuracy after 30 epochs of fine-tuning
    "ResNet18": 0.691, "ResNet34": 0.699, "ResNet50": 0.693, "ResNet101": 0.692, "ResNet152": 0.693,
    "ResNeXt50": 0.694, "ResNeXt101": 0.708, "Wide ResNet50": 0.703, "Wide ResNet101": 0.706,
    "DenseNet121": 0.698, "DenseNet161": 0.705, "DenseNet169": 0.700, "DenseNet201": 0.703,
    "VGG11": 0.683, "VGG13": 0.683, "VGG16": 0.682, "VGG19": 0.685,
}
