"""Pseudocomplex multidilated convolutions and D2/D3 blocks, causal along time, streamable.

After N. Takahashi and Y. Mitsufuji, "Densely connected multidilated convolutional networks for
dense prediction tasks", CVPR 2021 (D3Net), extended to complex features ``[B, C, 2, F, N]`` with
:class:`speechkit.nn.complex.ComplexConv2d` as in Watcharasupat et al., ICASSP 2022.

* :class:`MultidilatedComplexConv2d`: the input is a concatenation of feature maps
  ``[x_0, x_1, ..., x_l]``; map ``x_i`` is convolved with its own dilation ``base ** i`` (along
  time, and along frequency when ``dilate_freq``) and the results are summed. Coarse and fine
  features thus never alias through a shared large dilation.
* :class:`D2Block`: ``L`` densely connected layers; layer ``l`` sees ``[x_0 .. x_l]`` (the block
  input and every earlier layer output) through a multidilated conv, then norm and activation
  (post-activation, so the cached features are final), adding ``growth_rate`` channels. The block
  outputs ``[x_1 .. x_L]`` (``L * growth_rate`` channels).
* :class:`D3Block`: ``M`` densely connected D2 blocks (block ``j`` sees the D3 input and every
  earlier D2 output) followed by a 1x1 complex compression conv, norm and activation.

Time is causal (left context only); frequency is "same"-padded (it is within a frame). Streaming:
group ``x_i`` is always convolved with time dilation ``base ** i``, so a D2 block keeps one
history per group, the last ``(k_t - 1) * base ** i`` frames of ``x_i`` (``i < L``), time-major
``[B, H_i, C_i, 2, F]`` so the per-step shift is a contiguous copy; a one-frame step reads only the
``k_t - 1`` past frames each tap needs. ``forward(x)`` is exactly ``forward_step(x, zero
histories)``, so chunked streaming equals the offline output (with frame-local norms or batch norm
in eval mode).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .complex import ComplexConv2d, ComplexSplitActivation, make_complex_norm
from .conv import push_frames


class MultidilatedComplexConv2d(nn.Module):
    """Sum of complex convs, one per input group, each with its own dilation.

    Args:
        group_channels: complex channels of each input group ``x_i`` (concatenated in this order).
        out_channels: complex output channels.
        kernel_size: ``(k_f, k_t)`` shared by every group.
        dilations: ``(d_f, d_t)`` of each group.
        bias: one complex bias for the sum.
    """

    def __init__(
        self,
        group_channels: Sequence[int],
        out_channels: int,
        kernel_size: tuple[int, int],
        dilations: Sequence[tuple[int, int]],
        bias: bool = True,
    ) -> None:
        super().__init__()
        if len(group_channels) != len(dilations) or not group_channels:
            raise ConfigError("a multidilated conv needs one dilation per input group (at least one group)")
        self.group_channels = tuple(int(channels) for channels in group_channels)
        self.in_channels = sum(self.group_channels)
        self.out_channels = int(out_channels)
        self.convs = nn.ModuleList(
            ComplexConv2d(channels, out_channels, kernel_size, dilation, bias=bias and index == 0)
            for index, (channels, dilation) in enumerate(zip(self.group_channels, dilations))
        )

    @property
    def time_context(self) -> int:
        """Past frames the largest dilation needs."""
        return max(conv.time_context for conv in self.convs)

    def forward_valid(self, padded: torch.Tensor, history_frames: int) -> torch.Tensor:
        """``padded [B, C_in, 2, F, H + N]`` whose first ``H = history_frames`` frames are past context.

        ``H`` must be at least :attr:`time_context`. Returns ``[B, C_out, 2, F, N]``.
        """
        output: torch.Tensor | None = None
        channel_start = 0
        for channels, conv in zip(self.group_channels, self.convs):
            group = padded[:, channel_start : channel_start + channels, :, :, history_frames - conv.time_context :]
            result = conv.forward_valid(group)  # [B, C_out, 2, F, N]
            output = result if output is None else output + result
            channel_start += channels
        assert output is not None
        return output

    def forward_groups(self, groups: Sequence[torch.Tensor], pasts: Sequence[torch.Tensor]) -> torch.Tensor:
        """``groups[i] [B, c_i, 2, F, N]`` after ``pasts[i] [B, ctx_i, c_i, 2, F]`` -> ``[B, C_out, 2, F, N]``.

        ``pasts[i]`` is time-major and holds exactly the ``ctx_i = (k_t - 1) * d_i`` frames group
        ``i``'s dilation reaches back. One frame (``N = 1``) reads only its ``k_t - 1`` taps.
        """
        output: torch.Tensor | None = None
        for group, past, conv in zip(groups, pasts, self.convs):
            if group.shape[-1] == 1:
                taps = past[:, :: conv.dilation[1]].permute(0, 2, 3, 4, 1)  # [B, c, 2, F, k_t - 1]
                result = conv.forward_taps(torch.cat([taps, group], dim=-1))  # [B, C_out, 2, F, 1]
            else:
                padded = torch.cat([past.permute(0, 2, 3, 4, 1), group], dim=-1)  # [B, c, 2, F, ctx + N]
                result = conv.forward_valid(padded)  # [B, C_out, 2, F, N]
            output = result if output is None else output + result
        assert output is not None
        return output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal: ``x [B, C_in, 2, F, N] -> [B, C_out, 2, F, N]`` (zero past)."""
        padded = nn.functional.pad(x, (self.time_context, 0))  # [B, C_in, 2, F, ctx + N]
        return self.forward_valid(padded, self.time_context)


class D2Block(nn.Module):
    """Densely connected multidilated layers on complex features.

    Args:
        in_channels: complex channels of the block input ``x_0``.
        growth_rate: complex channels each layer adds.
        num_layers: ``L``.
        kernel_size: ``(k_f, k_t)``; ``k_f`` odd.
        dilation_base: group ``i`` uses dilation ``dilation_base ** i``.
        dilate_freq: dilate along frequency as well as time.
        norm: ``"batch"``, ``"frame"`` or ``"none"`` (see :func:`make_complex_norm`).
        activation: split activation name (see :class:`ComplexSplitActivation`).
    """

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        num_layers: int,
        kernel_size: tuple[int, int] = (3, 3),
        dilation_base: int = 2,
        dilate_freq: bool = True,
        norm: str = "batch",
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        if num_layers <= 0 or growth_rate <= 0:
            raise ConfigError(f"a D2 block needs positive num_layers and growth_rate, got {num_layers}, {growth_rate}")
        if kernel_size[1] < 2:
            raise ConfigError(f"a D2 block needs a time kernel of at least 2 frames, got {kernel_size[1]}")
        self.in_channels = in_channels
        self.growth_rate = growth_rate
        self.num_layers = num_layers
        self.kernel_size = kernel_size
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.activations = nn.ModuleList()
        for layer in range(num_layers):
            groups = [in_channels] + [growth_rate] * layer
            dilations = [
                (dilation_base**index if dilate_freq else 1, dilation_base**index) for index in range(layer + 1)
            ]
            self.convs.append(
                MultidilatedComplexConv2d(groups, growth_rate, kernel_size, dilations, bias=norm == "none")
            )
            self.norms.append(make_complex_norm(norm, growth_rate))
            self.activations.append(ComplexSplitActivation(activation, growth_rate))
        #: past frames kept of each group ``x_i`` (``i < L``): what its dilation ``base ** i`` reaches
        self.group_history_frames = [(kernel_size[1] - 1) * dilation_base**index for index in range(num_layers)]
        self.group_channels = [in_channels] + [growth_rate] * (num_layers - 1)
        self.history_frames = self.group_history_frames[-1]

    @property
    def out_channels(self) -> int:
        """Complex output channels: ``num_layers * growth_rate``."""
        return self.num_layers * self.growth_rate

    def history_shapes(self, batch_size: int, num_freqs: int) -> list[tuple[int, ...]]:
        """Shapes of the time-major streaming histories, one per group: ``[B, H_i, C_i, 2, F]``."""
        return [
            (batch_size, frames, channels, 2, num_freqs)
            for frames, channels in zip(self.group_history_frames, self.group_channels)
        ]

    def forward_step(
        self, x: torch.Tensor, histories: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x [B, C_in, 2, F, N]`` after ``histories`` -> output ``[B, L*k, 2, F, N]`` and the new histories."""
        features = [x]
        for layer, (conv, norm, activation) in enumerate(zip(self.convs, self.norms, self.activations)):
            hidden = conv.forward_groups(features, histories[: layer + 1])  # [B, k, 2, F, N]
            features.append(activation(norm(hidden)))  # [B, k, 2, F, N]
        new_histories = [
            push_frames(history, feature.permute(0, 4, 1, 2, 3))  # [B, H_i, C_i, 2, F]
            for history, feature in zip(histories, features[: self.num_layers])
        ]
        return torch.cat(features[1:], dim=1), new_histories  # [B, L*k, 2, F, N]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal: ``x [B, C_in, 2, F, N] -> [B, L*k, 2, F, N]``."""
        histories = [x.new_zeros(shape) for shape in self.history_shapes(x.shape[0], x.shape[3])]
        return self.forward_step(x, histories)[0]


class D3Block(nn.Module):
    """Densely connected D2 blocks and a 1x1 complex compression to ``out_channels``.

    Args:
        in_channels: complex input channels.
        out_channels: complex output channels after compression.
        num_d2_blocks: ``M``.
        growth_rate, num_layers, kernel_size, dilation_base, dilate_freq, norm, activation: as in
            :class:`D2Block` (shared by every D2 block).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_d2_blocks: int,
        growth_rate: int,
        num_layers: int,
        kernel_size: tuple[int, int] = (3, 3),
        dilation_base: int = 2,
        dilate_freq: bool = True,
        norm: str = "batch",
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        if num_d2_blocks <= 0:
            raise ConfigError(f"a D3 block needs at least one D2 block, got {num_d2_blocks}")
        d2_out = num_layers * growth_rate
        self.d2_blocks = nn.ModuleList(
            D2Block(
                in_channels + index * d2_out, growth_rate, num_layers, kernel_size,
                dilation_base, dilate_freq, norm, activation,
            )
            for index in range(num_d2_blocks)
        )
        self.compress = ComplexConv2d(in_channels + num_d2_blocks * d2_out, out_channels, 1, bias=norm == "none")
        self.norm = make_complex_norm(norm, out_channels)
        self.activation = ComplexSplitActivation(activation, out_channels)
        self.out_channels = out_channels

    def history_specs(self, batch_size: int, num_freqs: int) -> list[tuple[str, tuple[int, ...]]]:
        """``("d2_<j>_x<i>", shape)`` of every streaming history, D2 block by D2 block, group by group."""
        return [
            (f"d2_{block_index}_x{group}", shape)
            for block_index, block in enumerate(self.d2_blocks)
            for group, shape in enumerate(block.history_shapes(batch_size, num_freqs))
        ]

    def history_shapes(self, batch_size: int, num_freqs: int) -> list[tuple[int, ...]]:
        """Shapes of the streaming histories (see :meth:`history_specs`)."""
        return [shape for _, shape in self.history_specs(batch_size, num_freqs)]

    @property
    def num_histories(self) -> int:
        """Number of history tensors :meth:`forward_step` takes."""
        return sum(block.num_layers for block in self.d2_blocks)

    def forward_step(
        self, x: torch.Tensor, histories: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x [B, C_in, 2, F, N]`` -> ``[B, C_out, 2, F, N]`` and the new histories."""
        features = [x]
        new_histories: list[torch.Tensor] = []
        position = 0
        for block in self.d2_blocks:
            output, block_histories = block.forward_step(
                torch.cat(features, dim=1), histories[position : position + block.num_layers]
            )  # [B, L*k, 2, F, N]
            features.append(output)
            new_histories.extend(block_histories)
            position += block.num_layers
        dense = torch.cat(features, dim=1)  # [B, C_in + M*L*k, 2, F, N]
        return self.activation(self.norm(self.compress.forward_valid(dense))), new_histories  # [B, C_out, 2, F, N]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal: ``x [B, C_in, 2, F, N] -> [B, C_out, 2, F, N]``."""
        histories = [x.new_zeros(shape) for shape in self.history_shapes(x.shape[0], x.shape[3])]
        return self.forward_step(x, histories)[0]


__all__ = ["D2Block", "D3Block", "MultidilatedComplexConv2d"]
