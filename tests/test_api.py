"""The public Python API: every advertised name resolves, and ``import thermocg`` stays light."""

import subprocess
import sys

import pytest

import thermocg


@pytest.mark.parametrize("name", sorted(thermocg._LAZY))
def test_public_name_resolves_to_its_module(name):
    value = getattr(thermocg, name)
    assert value.__module__ == thermocg._LAZY[name]


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        thermocg.nonexistent  # noqa: B018


def test_import_does_not_pull_torch_or_openmm():
    code = "import sys, thermocg; print('torch' in sys.modules, 'openmm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
