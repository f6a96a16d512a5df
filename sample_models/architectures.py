"""The built-in sample architectures (PyTorch modules).

All three are small, run in eval mode on CPU in FP32, and export to ONNX with a dynamic batch axis:
their forward passes hold no control flow that depends on tensor values.

- :class:`DigitsCNN` - 2-D conv-bn-relu network with one residual block, for scikit-learn's 8x8 digits.
- :class:`Mnist1dCNN` - 1-D conv-bn-relu network with one residual block, for MNIST-1D (length 40).
- :class:`DigitsTransformer` - a 2-layer transformer encoder over the 64 pixels of a digits image,
  read as tokens (intensity 0..16, pad id 17), with hand-written attention (explicit ``nn.Linear``
  q/k/v projections and ``torch.matmul``), so FLOP counters and the ONNX graph both see the
  matrix products.
"""
from __future__ import annotations

import math

import torch
from torch import nn

#: Vocabulary of the digits-tokens dataset: pixel intensities 0..16 and the pad id.
DIGITS_PAD_ID = 17
DIGITS_VOCAB = 18
DIGITS_SEQ_LEN = 64


class ConvBNReLU2d(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class ResidualBlock2d(nn.Module):
    """``relu(x + bn(conv(relu(bn(conv(x))))))``; input and output channels are equal."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class DigitsCNN(nn.Module):
    """CNN for 8x8 digits: input ``image`` [batch, 1, 8, 8] (intensity / 16), output 10 logits.

    32 -> 64 channels at 8x8, a 64-channel residual block, 2x2 max-pool to 4x4, a 64 -> 128 conv,
    global average pooling and a linear head.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = ConvBNReLU2d(1, 32)
        self.conv2 = ConvBNReLU2d(32, 64)
        self.res = ResidualBlock2d(64)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = ConvBNReLU2d(64, 128)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.stem(image))
        x = self.pool(self.res(x))
        x = self.gap(self.conv3(x)).flatten(1)
        return self.fc(self.dropout(x))


class ConvBNReLU1d(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm1d(c_out),
            nn.ReLU(inplace=True),
        )


class ResidualBlock1d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class Mnist1dCNN(nn.Module):
    """1-D CNN for MNIST-1D: input ``signal`` [batch, 1, 40], output 10 logits.

    Conv 1 -> 32 (k5), 32 -> 64 (stride 2, length 20), a 64-channel residual block, 64 -> 64
    (stride 2, length 10), then the flattened 64x10 features feed a linear head (position matters
    in MNIST-1D, so no global pooling).
    """

    def __init__(self, num_classes: int = 10, length: int = 40):
        super().__init__()
        self.stem = ConvBNReLU1d(1, 32, kernel=5)
        self.down1 = ConvBNReLU1d(32, 64, stride=2)
        self.res = ResidualBlock1d(64)
        self.down2 = ConvBNReLU1d(64, 64, stride=2)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(64 * (length // 4), num_classes)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        x = self.down2(self.res(self.down1(self.stem(signal))))
        return self.fc(self.dropout(x.flatten(1)))


class SelfAttention(nn.Module):
    """Multi-head self-attention written out: q/k/v ``Linear``s, ``matmul``, additive mask, softmax.

    ``mask_bias`` is [batch, 1, 1, seq]: 0 for tokens to attend to, a large negative value for
    padding. The head count is inferred from the projection width (``-1`` in the reshape), so
    removing whole heads from q/k/v/out keeps the module consistent; ``head_dim`` is fixed.
    """

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[1]
        q = self.q(x).reshape(b, t, -1, self.head_dim).transpose(1, 2)  # [b, h, t, d]
        k = self.k(x).reshape(b, t, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).reshape(b, t, -1, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scale + mask_bias  # [b, h, t, t]
        attn = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(attn, v).transpose(1, 2)  # [b, t, h, d]
        return self.out(ctx.reshape(b, t, -1))


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: ``x + attn(ln(x))``, then ``x + ff(ln(x))``."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, num_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.act = nn.GELU()
        self.ff2 = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask_bias))
        return x + self.drop(self.ff2(self.act(self.ff1(self.ln2(x)))))


class DigitsTransformer(nn.Module):
    """Transformer classifier over digits pixels as tokens.

    Inputs ``input_ids`` int64 [batch, 64] (intensity 0..16, pad id 17) and ``attention_mask``
    int64 [batch, 64] (1 = token, 0 = padding). Token + learned position embeddings, 2 pre-norm
    encoder layers (d_model 64, 4 heads, feed-forward 128), final LayerNorm, mean over unmasked
    tokens, linear head to 10 logits. The mask enters attention additively (-1e4 on padding, a
    value that stays finite in FP16).
    """

    def __init__(self, num_classes: int = 10, vocab: int = DIGITS_VOCAB, seq_len: int = DIGITS_SEQ_LEN,
                 d_model: int = 64, num_heads: int = 4, d_ff: int = 128, num_layers: int = 2):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(1, seq_len, d_model))
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        self.layers = nn.ModuleList(EncoderLayer(d_model, num_heads, d_ff) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)  # [b, t]
        mask_bias = ((1.0 - mask) * -1e4)[:, None, None, :]  # [b, 1, 1, t]
        x = self.tok(input_ids) + self.pos
        for layer in self.layers:
            x = layer(x, mask_bias)
        x = self.norm(x)
        m = mask.unsqueeze(-1)
        pooled = (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)


def build_digits_cnn() -> nn.Module:
    return DigitsCNN().eval()


def build_mnist1d_cnn() -> nn.Module:
    return Mnist1dCNN().eval()


def build_digits_transformer() -> nn.Module:
    return DigitsTransformer().eval()
