import pytest
import torch

from bridge.devices import get_device
from federation.accounting import SERVER, CommLedger, tensor_nbytes, transfer_time_s
from federation.messages import LinkType


def test_tensor_nbytes_is_numel_times_element_size():
    payload = {"a": torch.zeros(3, 4, dtype=torch.float32), "b": torch.zeros(5, dtype=torch.float16),
               "c": torch.zeros(2, dtype=torch.int64)}
    assert tensor_nbytes(payload) == 3 * 4 * 4 + 5 * 2 + 2 * 8


def test_transfer_time():
    assert transfer_time_s(1_000_000, 8.0) == pytest.approx(1.0)


def test_ledger_energy_per_link_from_profiles():
    # Prepare: quest 3 (uplink 0.645, d2d 0.3 uJ/bit) and ray-ban (uplink 5.0, d2d 0.572 uJ/bit)
    led = CommLedger({"q": get_device("meta_quest_3"), "r": get_device("ray_ban_meta")})
    n = 1000  # bytes = 8000 bits
    # Execute
    up = led.record(0, LinkType.UPLINK, "r", SERVER, n)
    down = led.record(0, LinkType.DOWNLINK, SERVER, "q", n)
    d2d = led.record(0, LinkType.D2D, "q", "r", n)
    # Assert
    assert up.joules == pytest.approx(8000 * 5.0e-6)
    assert down.joules == pytest.approx(8000 * 0.645e-6)
    assert d2d.joules == pytest.approx(8000 * (0.3 + 0.572) * 1e-6)
    tot = led.round_totals(0)
    assert tot["uplink"]["bytes"] == n and tot["d2d"]["messages"] == 1 and tot["downlink"]["bytes"] == n
    dev = led.device_totals()
    assert dev["r"]["bytes_sent"] == n and dev["r"]["bytes_received"] == n
    assert dev["r"]["comm_joules"] == pytest.approx(8000 * 5.0e-6 + 8000 * 0.572e-6)


def test_ledger_rows_round_trip_and_drop_round():
    led = CommLedger({"q": get_device("meta_quest_3")})
    led.record(0, LinkType.UPLINK, "q", SERVER, 10)
    led.record(1, LinkType.UPLINK, "q", SERVER, 20)
    other = CommLedger(led.profiles)
    other.load_rows(led.to_rows())
    assert other.records == led.records
    other.drop_round(1)
    assert [r.round for r in other.records] == [0]


def test_ledger_unknown_device_lists_known():
    led = CommLedger({"q": get_device("meta_quest_3")})
    with pytest.raises(KeyError, match="known"):
        led.record(0, LinkType.UPLINK, "zz", SERVER, 1)
