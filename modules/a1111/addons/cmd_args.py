"""A1111 names of ``modules.cmd_args``: ``parser``, an ``argparse`` parser of the app's flags (extensions read its
``description`` to tell web UIs apart, or parse known args with it)."""
from __future__ import annotations

from modules.cmd_args import build_parser

parser = build_parser()
