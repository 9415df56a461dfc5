"""DRAM traffic of the SpAtten fetchers: bit-width packing, 32-byte transactions and channel interleaving.

SpAtten (arXiv:2012.09852), Sec. 4.1 (fetchers over HBM channels) and Sec. 3.4 (progressive quantization: MSBs first,
LSBs on a refetch). The reference design (mit-han-lab/spatten, hw.md Sec. 2.3) reads 32-byte AXI transactions over
16 channels, one transaction per channel per cycle in its behavioural model, and packs 6-bit values as 8 bits.

Counting rule (ours, stated): each row (one key, value or query vector of D elements) is packed at the rounded width
and fetched as whole transactions, ceil(D * bits / (8 * transaction_bytes)) per row, because pruned rows are gathered,
not streamed; a head's transactions spread evenly over the channels, ceil(transactions / channels) cycles.
"""

from __future__ import annotations

import numpy as np

from accel_sims.errors import AccelSimsError
from accel_sims.spatten.config import SpAttenConfig


def packed_bits(bits: int, config: SpAttenConfig) -> int:
    """The width the fetcher stores `bits`-bit values at: the next width in `config.packed_bit_widths`."""
    for w in config.packed_bit_widths:
        if bits <= w:
            return w
    raise AccelSimsError(f"bit width {bits} exceeds the widest packed width {config.packed_bit_widths[-1]}")


def packed_bits_array(bits: np.ndarray, config: SpAttenConfig) -> np.ndarray:
    """`packed_bits` for an integer array (0 stays 0: nothing fetched)."""
    widths = np.asarray(config.packed_bit_widths, dtype=np.int64)
    b = np.asarray(bits, dtype=np.int64)
    if np.any(b > widths[-1]):
        raise AccelSimsError(f"bit width {int(b.max())} exceeds the widest packed width {int(widths[-1])}")
    out = widths[np.searchsorted(widths, b, side="left").clip(0, widths.size - 1)]
    return np.where(b <= 0, 0, out)


def transactions_per_row(head_dim: np.ndarray | int, bits: np.ndarray | int, config: SpAttenConfig) -> np.ndarray:
    """DRAM transactions to fetch one D-element row at `bits` (rounded to a packed width)."""
    row_bits = np.asarray(head_dim, dtype=np.int64) * packed_bits_array(np.asarray(bits), config)
    line_bits = 8 * config.transaction_bytes
    return np.asarray(-(-row_bits // line_bits))


def fetch_transactions(
    rows: np.ndarray | int, head_dim: np.ndarray | int, bits: np.ndarray | int, config: SpAttenConfig
) -> np.ndarray:
    """Transactions to fetch `rows` rows of `head_dim` elements at `bits` each."""
    return np.asarray(np.asarray(rows, dtype=np.int64) * transactions_per_row(head_dim, bits, config))


def channel_cycles(transactions: np.ndarray | int, config: SpAttenConfig) -> np.ndarray:
    """Cycles to serve `transactions` spread over the channels (bert.cpp: ceil(t / channels), one per cycle)."""
    t = np.asarray(transactions, dtype=np.int64)
    per_channel = -(-t // config.dram_channels)
    return np.asarray(np.ceil(per_channel / config.transactions_per_cycle_per_channel).astype(np.int64))
