"""``python -m etlctl``: the same as the ``etl`` console script."""

from etlctl.cli import app

app(prog_name="etl")
