"""Device types from user agents, as the summary counts them."""

import pytest

from api.summary import device_type


@pytest.mark.parametrize(
    ("agent", "device"),
    [
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/97.0 Safari/537.36", "desktop"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Version/15.3 Safari/605.1.15",
            "desktop",
        ),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:97.0) Gecko/20100101 Firefox/97.0", "desktop"),
        ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 Chrome/97.0 Safari/537.36", "laptop"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 15_2 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", "mobile"),
        ("Mozilla/5.0 (Linux; Android 12; Pixel 6) AppleWebKit/537.36 Chrome/97.0 Mobile Safari/537.36", "mobile"),
        ("Mozilla/5.0 (iPad; CPU OS 15_2 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", "tablet"),
        ("Mozilla/5.0 (Linux; Android 11; SM-T870) AppleWebKit/537.36 Chrome/97.0 Safari/537.36", "tablet"),
        ("curl/8.0", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_device_type(agent, device):
    assert device_type(agent) == device
