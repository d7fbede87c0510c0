"""The usage examples in the billing modules' docstrings stay true."""

import doctest
import importlib

import pytest

MODULES = [
    "billing.aggregations",
    "billing.charge_models",
    "billing.coupons",
    "billing.decimals",
    "billing.money",
    "billing.plans",
    "billing.pricing",
    "billing.signature",
    "billing.usage",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
