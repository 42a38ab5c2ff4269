"""`diffcast nowcast` (being implemented)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Not registered yet."""
