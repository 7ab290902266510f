"""The product's own scripts, written on the public ``modules.scripts`` contract like any extension's:
``prompt_matrix.py`` (Prompt matrix), ``xyz_grid.py`` (X/Y/Z plot), ``prompts_from_file.py`` (Prompts from file or
textbox). Files starting with ``_`` are shared helpers, not scripts."""
