"""A1111's top-level ``launch`` module for extensions' ``install.py`` (``from launch import run_pip, is_installed``).
Registered as ``launch`` by ``modules.a1111.install()``; an ``install.py`` subprocess finds it through the folder
``modules/a1111/launch_path`` on its ``PYTHONPATH``."""
from modules.a1111.launch_utils import (  # noqa: F401 - A1111 names
    args, check_run_python, commit_hash, dir_repos, git, git_tag, index_url, is_installed, python, repo_dir, run,
    run_pip,
)
