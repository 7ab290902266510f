"""``import launch`` for an extension's ``install.py`` run as a subprocess (this folder is on its PYTHONPATH)."""
from modules.a1111.launch import *  # noqa: F401,F403
from modules.a1111.launch import args, is_installed, python, run, run_pip  # noqa: F401
