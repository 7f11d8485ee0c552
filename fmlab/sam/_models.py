"""Small networks for the SAM studies, tests and benchmarks (no torchvision needed).

Every model exposes ``features(x) -> (B, d)`` (penultimate activations) and ``head`` (the last
linear layer), so the regularisers and linear probes work the same on all of them.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SmallCNN", "SmallMLP", "TinyTransformer", "resnet18_cifar"]


class SmallCNN(nn.Module):
    """Two conv blocks and a hidden linear layer for 28x28 (or any size) grayscale images.

    Args:
        n_classes: Number of outputs.
        in_channels: Image channels.
        width: Channels of the first conv (the second has twice as many).
        hidden: Width of the penultimate layer.
        batch_norm: Add batch norm after each conv.
    """

    def __init__(self, n_classes: int = 10, in_channels: int = 1, width: int = 16,
                 hidden: int = 64, batch_norm: bool = False) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            return [*layers, nn.ReLU(), nn.MaxPool2d(2)]

        self.body = nn.Sequential(
            *block(in_channels, width), *block(width, 2 * width),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * width * 16, hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, n_classes)


class SmallMLP(nn.Module):
    """A ReLU multilayer perceptron on flattened inputs (fast on CPU; the label-noise study's
    quick model).

    Args:
        in_features: Flattened input size (e.g. ``14 * 14`` for 2x-downsampled MNIST).
        n_classes: Number of outputs.
        hidden: Width of each hidden layer (the last one is the penultimate layer).
        depth: Number of hidden layers.
    """

    def __init__(self, in_features: int, n_classes: int = 10, hidden: int = 256,
                 depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, n_classes)


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


class _ResNet(nn.Module):
    def __init__(self, n_classes: int, width: int, in_channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        layers: list[nn.Module] = []
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            layers += [_Basic(cin, cout, stride), _Basic(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.stem(x))  # (B, 8w, H/8, W/8)
        return h.mean((2, 3))  # (B, 8w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def resnet18_cifar(n_classes: int = 10, width: int = 64, in_channels: int = 3) -> nn.Module:
    """ResNet-18 for 32x32 inputs (3x3 stem, no max-pool; 11.2M parameters at ``width=64``).

    References:
        He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. arXiv 1512.03385.
    """
    return _ResNet(n_classes, width, in_channels)


class TinyTransformer(nn.Module):
    """A pre-norm transformer encoder classifier over token ids (mean-pooled).

    Args:
        vocab_size: Token vocabulary size.
        n_classes: Number of outputs.
        d_model: Embedding width.
        n_heads: Attention heads.
        n_layers: Encoder layers.
        max_len: Longest sequence (learned positions).
    """

    def __init__(self, vocab_size: int = 1000, n_classes: int = 2, d_model: int = 128,
                 n_heads: int = 4, n_layers: int = 2, max_len: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.zeros(max_len, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]  # (B, T, d)
        return self.norm(self.encoder(h)).mean(1)  # (B, d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(tokens))
