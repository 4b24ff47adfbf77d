"""docs/architecture.md draws the run's statuses as the run contract has them."""

import re
from pathlib import Path

from etl_common.runs import state_diagram

DOC = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"


def test_the_state_diagram_is_the_contracts():
    blocks = re.findall(r"```mermaid\n(.*?)\n```", DOC.read_text(), flags=re.S)
    assert blocks == [state_diagram()]


def test_the_modules_the_doc_names_exist():
    root = DOC.parents[1] / "services"
    named = set(re.findall(r"`((?:saver|etl_common|api|etlctl)/[\w/]+\.(?:py|js))`", DOC.read_text()))
    assert named and not [n for n in named if not (root / n).exists()]
