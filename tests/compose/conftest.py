"""Markers of the compose and image checks."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "pypi: needs PyPI (wheel availability for the images' platforms); deselect with -m 'not pypi'"
    )
