"""The Linear DiT of SANA and SANA-1.5.

Xie et al., "SANA" (ICLR 2025), Sec. 2.2 and Fig. 5; Xie et al., "SANA 1.5" (ICML 2025), Sec. 2.1.
A latent ``[B, C, H, W]`` (or ``[B, C, T, H, W]`` for video configs) is cut into patches (size 1 on
DC-AE latents), then each block does::

    x = x + gate_msa * LinearAttention(LN(x) * (1 + scale_msa) + shift_msa)
    x = x + CrossAttention(x, text)  # no norm, gate or modulation
    x = x + gate_mlp * MixFFN(LN(x) * (1 + scale_mlp) + shift_mlp, grid)

with the six modulation vectors from AdaLN-single. The model predicts the flow velocity
``v = noise - x0`` at timestep ``t * 1000``. Text conditioning is an input: the hidden states of a
text encoder (Gemma-2-2B's last layer for the released models) and their padding mask.

Module names follow the original Sana checkpoints, so our own format needs no key map for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from linear_dit.adaln_single import TimestepEmbedder, modulate
from linear_dit.config import LinearDiTConfig
from linear_dit.cross_attention import CrossAttention
from linear_dit.errors import InputError
from linear_dit.linear_attention import LinearAttention
from linear_dit.mix_ffn import MixFFN
from linear_dit.norms import RMSNorm, clamp_fp16, layer_norm_fp32
from linear_dit.positional_embedding import sincos_2d, sincos_3d

__all__ = ["LinearDiT", "LinearDiTBlock"]


class PatchEmbed(nn.Module):
    """``p x p`` patches to tokens; the conv weight ``(C, in, p, p)`` runs as one matrix product."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, (H/p)(W/p), dim]``, row-major over the patch grid."""
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)
        return F.linear(x, self.proj.weight.flatten(1), self.proj.bias)


class _CaptionMLP(nn.Module):
    def __init__(self, caption_channels: int, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(caption_channels, dim)
        self.fc2 = nn.Linear(dim, dim)


class CaptionEmbedder(nn.Module):
    """Text-encoder states to model width: ``fc1 -> GELU(tanh) -> fc2`` (PixArt's caption MLP)."""

    def __init__(self, caption_channels: int, dim: int) -> None:
        super().__init__()
        self.y_proj = _CaptionMLP(caption_channels, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        # fp16: gelu(-inf) is NaN, so the hidden layer saturates instead of overflowing.
        return clamp_fp16(self.y_proj.fc2(F.gelu(clamp_fp16(self.y_proj.fc1(y)), approximate="tanh")))


class LinearDiTBlock(nn.Module):
    """One Linear DiT block (see the module docstring)."""

    def __init__(self, config: LinearDiTConfig) -> None:
        super().__init__()
        c = config.hidden_size
        self.norm_eps = config.norm_eps
        self.attn = LinearAttention(c, config.attention_head_dim, config.linear_attention_eps, config.qk_norm)
        self.cross_attn = CrossAttention(c, config.num_cross_attention_heads, config.cross_norm)
        self.mlp = MixFFN(c, config.mlp_hidden, video=config.video)
        self.scale_shift_table = nn.Parameter(torch.randn(6, c) / c**0.5)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, t0: torch.Tensor, mask: torch.Tensor | None, grid: tuple[int, ...]
    ) -> torch.Tensor:
        b = x.shape[0]
        mod = self.scale_shift_table[None].to(t0.dtype) + t0.reshape(b, 6, -1)  # [B, 6, C]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.to(x.dtype).chunk(6, dim=1)
        h = modulate(layer_norm_fp32(x, self.norm_eps), shift_msa, scale_msa)
        x = clamp_fp16(x + gate_msa * self.attn(h))
        x = clamp_fp16(x + self.cross_attn(x, y, mask))
        h = modulate(layer_norm_fp32(x, self.norm_eps), shift_mlp, scale_mlp)
        return clamp_fp16(x + gate_mlp * self.mlp(h, grid))


class FinalLayer(nn.Module):
    """Modulated LayerNorm (its own 2-row table plus the raw timestep embedding) and a linear
    projection to ``p * p * out_channels`` per token."""

    def __init__(self, dim: int, patch_size: int, out_channels: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None].to(t.dtype) + t[:, None]).to(x.dtype).chunk(2, dim=1)
        return self.linear(modulate(layer_norm_fp32(x, self.eps), shift, scale))


class LinearDiT(nn.Module):
    """SANA's Linear DiT. ``forward(x, timestep, encoder_hidden_states, encoder_attention_mask)``
    returns the flow velocity, shaped like ``x``."""

    def __init__(self, config: LinearDiTConfig) -> None:
        super().__init__()
        self.config = config
        c = config.hidden_size
        self.x_embedder = PatchEmbed(config.in_channels, c, config.patch_size)
        self.t_embedder = TimestepEmbedder(c)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
        self.y_embedder = CaptionEmbedder(config.caption_channels, c)
        self.attention_y_norm = RMSNorm(c, eps=1e-5, init=config.caption_norm_init)
        self.blocks = nn.ModuleList(LinearDiTBlock(config) for _ in range(config.depth))
        self.final_layer = FinalLayer(c, config.patch_size, config.output_channels, config.norm_eps)
        self.gradient_checkpointing = False
        # Sin-cos tables per (grid, device): rebuilding one costs a third of a second at 4K on a CPU.
        self._pe_cache: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Sana's initialisation: xavier-uniform linears (the patch conv as a linear), zero biases,
        N(0, 0.02) for the timestep and caption MLPs. Nothing is zero-initialised (only the video
        temporal conv, which starts as the identity)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        assert self.x_embedder.proj.bias is not None
        nn.init.zeros_(self.x_embedder.proj.bias)
        for lin in (self.t_embedder.mlp[0], self.t_embedder.mlp[2], self.t_block[1]):
            assert isinstance(lin, nn.Linear)
            nn.init.normal_(lin.weight, std=0.02)
        nn.init.normal_(self.y_embedder.y_proj.fc1.weight, std=0.02)
        nn.init.normal_(self.y_embedder.y_proj.fc2.weight, std=0.02)

    @property
    def dtype(self) -> torch.dtype:
        return self.final_layer.linear.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.final_layer.linear.weight.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- input checks -------------------------------------------------------------------------

    def _check_inputs(
        self, x: torch.Tensor, timestep: torch.Tensor | float, y: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cfg = self.config
        want = "[B, C, T, H, W]" if cfg.video else "[B, C, H, W]"
        if not isinstance(x, torch.Tensor) or x.ndim != (5 if cfg.video else 4):
            found = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"latent must be {want} for config {cfg.name!r}, got shape {found}")
        if not x.is_floating_point():
            raise InputError(f"latent must be a floating-point tensor, got {x.dtype}")
        if x.shape[1] != cfg.in_channels:
            raise InputError(f"latent has {x.shape[1]} channels, config {cfg.name!r} expects {cfg.in_channels}")
        p = cfg.patch_size
        if x.shape[-1] % p or x.shape[-2] % p or x.shape[-1] == 0 or x.shape[-2] == 0:
            raise InputError(f"latent height and width {tuple(x.shape[-2:])} must be positive multiples of {p}")
        b = x.shape[0]
        t = torch.as_tensor(timestep, device=x.device)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, b)):
            raise InputError(f"timestep must be a scalar or have shape [{b}], got {tuple(t.shape)}")
        tf = t.float()
        if not bool(torch.isfinite(tf).all()) or bool((tf < 0).any()) or bool((tf > cfg.max_timestep).any()):
            raise InputError(
                f"timesteps must lie in [0, {cfg.max_timestep:g}] (flow time t in [0, 1] times "
                f"{cfg.max_timestep:g}), got min {tf.min().item():g}, max {tf.max().item():g}"
            )
        if y.ndim != 3 or y.shape[0] != b or y.shape[2] != cfg.caption_channels:
            raise InputError(
                f"encoder_hidden_states must be [B={b}, L, {cfg.caption_channels}] (the text encoder's hidden "
                f"size for config {cfg.name!r}), got {tuple(y.shape)}"
            )
        if mask is not None:
            if mask.shape != y.shape[:2]:
                raise InputError(
                    f"encoder_attention_mask must be [B, L] = {tuple(y.shape[:2])} like the text states, "
                    f"got {tuple(mask.shape)}"
                )
            if mask.dtype != torch.bool:
                if bool(((mask != 0) & (mask != 1)).any()):
                    raise InputError("encoder_attention_mask must hold only 0/1 (or booleans): 1 keeps a token")
                mask = mask != 0
            if not bool(mask.any(dim=1).all()):
                raise InputError("encoder_attention_mask masks every text token of some sample; keep at least one")
            if bool(mask.all()):
                mask = None  # nothing to mask: lets SDPA take its fastest path
        return tf.reshape(-1).expand(b), mask

    # -- forward ------------------------------------------------------------------------------

    def _positional(self, grid: tuple[int, ...], device: torch.device) -> torch.Tensor:
        cfg = self.config
        key = (grid, device)
        pe = self._pe_cache.get(key)
        if pe is None:
            if cfg.video:
                t, h, w = grid
                pe = sincos_3d(cfg.hidden_size, t, h, w, cfg.base_size, cfg.pe_interpolation, device)
            else:
                h, w = grid
                pe = sincos_2d(cfg.hidden_size, h, w, cfg.base_size, cfg.pe_interpolation, device)
            if len(self._pe_cache) >= 8:  # aspect-ratio buckets: keep the few in use
                self._pe_cache.clear()
            self._pe_cache[key] = pe
        return pe

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Flow velocity for latents ``x`` at ``timestep`` (in [0, 1000]) given the text states
        ``[B, L, caption_channels]`` and their mask ``[B, L]`` (1/True keeps a token)."""
        cfg = self.config
        t, mask = self._check_inputs(x, timestep, encoder_hidden_states, encoder_attention_mask)
        dtype = x.dtype if torch.is_autocast_enabled(x.device.type) else self.dtype
        x = x.to(dtype)
        p = cfg.patch_size
        b = x.shape[0]
        if cfg.video:
            frames = x.shape[2]
            grid: tuple[int, ...] = (frames, x.shape[3] // p, x.shape[4] // p)
            tokens = self.x_embedder(x.transpose(1, 2).flatten(0, 1)).reshape(b, -1, cfg.hidden_size)
        else:
            grid = (x.shape[2] // p, x.shape[3] // p)
            tokens = self.x_embedder(x)  # [B, N, C]
        if cfg.use_pe:
            tokens = tokens + self._positional(grid, x.device).to(tokens.dtype)

        temb = self.t_embedder(t)  # [B, C]
        t0 = self.t_block(temb)  # [B, 6C]
        y = self.attention_y_norm(self.y_embedder(encoder_hidden_states.to(dtype)))  # [B, L, C]

        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, y, t0, mask, grid, use_reentrant=False)
            else:
                tokens = block(tokens, y, t0, mask, grid)

        out = self.final_layer(tokens, temb)  # [B, N, p*p*out]
        return self._unpatchify(out, grid, b)

    def _unpatchify(self, out: torch.Tensor, grid: tuple[int, ...], b: int) -> torch.Tensor:
        p, c = self.config.patch_size, self.config.output_channels
        gh, gw = grid[-2:]
        frames = grid[0] if len(grid) == 3 else 1
        out = out.reshape(b * frames, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b * frames, c, gh * p, gw * p)
        if len(grid) == 3:
            return out.reshape(b, frames, c, gh * p, gw * p).transpose(1, 2).contiguous()
        return out
