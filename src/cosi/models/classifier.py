"""A small Fashion-MNIST CNN: the classifier and the feature space of the FD metric.

Input: images in [−1, 1], (B, 1, 28, 28) (the data block of a generated state, as is).
Two conv–conv–pool stages (28 → 14 → 7), one more conv, a 256-unit fully connected layer
(its post-ReLU output is :meth:`Classifier.features`, the Fréchet-distance feature space),
dropout and a linear read-out to 10 logits. BatchNorm throughout; call ``.eval()`` (the
loader does) before using features.

Training: :mod:`cosi.training.classifier`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from torch import Tensor, nn

FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                  "Bag", "Ankle boot")


@dataclass(frozen=True)
class ClassifierConfig:
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    widths: tuple = (32, 64, 128)
    feature_dim: int = 256
    dropout: float = 0.4

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.widths) != 3 or self.image_size % 4:
            raise ValueError(f"need 3 widths and image_size divisible by 4, got {self.widths}, {self.image_size}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown classifier config keys {sorted(unknown)}")
        return cls(**d)


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Classifier(nn.Module):
    """logits = head(features(x)); features(x) ∈ R^feature_dim (post-ReLU)."""

    def __init__(self, cfg: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.config = cfg
        w1, w2, w3 = cfg.widths
        side = cfg.image_size // 4
        self.body = nn.Sequential(
            conv_bn(cfg.in_channels, w1), conv_bn(w1, w1), nn.MaxPool2d(2),
            conv_bn(w1, w2), conv_bn(w2, w2), nn.MaxPool2d(2),
            conv_bn(w2, w3), nn.Flatten(),
            nn.Linear(w3 * side * side, cfg.feature_dim, bias=False), nn.BatchNorm1d(cfg.feature_dim),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.feature_dim, cfg.num_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (B, feature_dim) of images x ∈ [−1, 1]."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


# ---- training ------------------------------------------------------------------------------
