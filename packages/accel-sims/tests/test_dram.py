"""DRAM model (SpAtten Sec. 4.1): packed bit widths, exact transaction and channel-cycle counts."""

from __future__ import annotations

import numpy as np
import pytest

from accel_sims.errors import AccelSimsError
from accel_sims.spatten.config import SpAttenConfig
from accel_sims.spatten.dram import (
    channel_cycles,
    fetch_transactions,
    packed_bits,
    packed_bits_array,
    transactions_per_row,
)

CFG = SpAttenConfig.from_name("spatten")  # 32-byte (256-bit) transactions, 16 channels


def test_packed_widths_round_up_as_the_hardware() -> None:
    # hw.md: 6-bit widths are rounded up to 8; 12 is the RTL's native width.
    assert [packed_bits(b, CFG) for b in (1, 3, 4, 5, 6, 8, 10, 12, 13, 16)] == [1, 4, 4, 8, 8, 8, 12, 12, 16, 16]
    assert packed_bits_array(np.array([0, 6, 12, 16]), CFG).tolist() == [0, 8, 12, 16]
    with pytest.raises(AccelSimsError, match="33"):
        packed_bits(33, CFG)


def test_transactions_per_row() -> None:
    # D = 64: 8 bits -> 512 bits = 2 x 256; 12 -> 768 = 3; 4 -> 256 = 1; 6 packs as 8 -> 2; 16 -> 1024 = 4.
    assert transactions_per_row(np.array([64] * 5), np.array([8, 12, 4, 6, 16]), CFG).tolist() == [2, 3, 1, 2, 4]
    # D = 48 at 12 bits: 576 bits -> 2.25 lines -> 3 transactions; D = 32 at 6 (->8) bits: 256 bits -> 1.
    assert int(transactions_per_row(48, 12, CFG)) == 3
    assert int(transactions_per_row(32, 6, CFG)) == 1


def test_fetch_and_channel_cycles_exact() -> None:
    # 40 keys of D = 64 at 6 bits (-> 8): 40 x 2 = 80 transactions -> 80 / 16 channels = 5 cycles.
    assert int(fetch_transactions(40, 64, 6, CFG)) == 80
    assert int(channel_cycles(80, CFG)) == 5
    # 12 values at 8 bits: 24 transactions -> ceil(24 / 16) = 2 cycles; 35 -> 3 cycles.
    assert int(fetch_transactions(12, 64, 8, CFG)) == 24
    assert channel_cycles(np.array([24, 35, 0, 16]), CFG).tolist() == [2, 3, 0, 1]


def test_channel_count_and_transaction_size_follow_the_config() -> None:
    cfg = SpAttenConfig(name="narrow", dram_channels=2, transaction_bytes=16)
    # D = 64 at 8 bits = 512 bits over 128-bit transactions: 4 per row; 3 rows = 12 -> 6 cycles on 2 channels.
    assert int(fetch_transactions(3, 64, 8, cfg)) == 12
    assert int(channel_cycles(12, cfg)) == 6
    assert cfg.dram_bytes_per_cycle == 32
    assert CFG.dram_gb_per_s == pytest.approx(512.0)
