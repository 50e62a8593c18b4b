"""Fixtures for the tests and the doctests alike."""

import logging

import pytest


@pytest.fixture(autouse=True)
def package_logging(request):
    """The package's log lines where a CLI or a notebook puts them (stdout, warnings on stderr), so capsys sees
    them; in a doctest only warnings, so an example shows its value rather than the progress lines around it."""
    from chartrl_colab.messages import configure_logging

    doctest = type(request.node).__name__ == "DoctestItem"
    configure_logging(logging.WARNING if doctest else logging.INFO)
