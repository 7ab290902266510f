"""A1111's ``modules.deepbooru``: DeepBooru tag interrogation. The web UI has no DeepBooru model, so ``model`` is
there for scripts that import it, and using it raises an error that says so."""
from __future__ import annotations

from typing import Any


class DeepDanbooru:
    def _missing(self) -> NotImplementedError:
        return NotImplementedError("modules.deepbooru: DeepBooru interrogation is an A1111 feature this web UI "
                                   "does not provide")

    def start(self) -> None:
        raise self._missing()

    def stop(self) -> None:
        """Nothing was started."""

    def tag(self, pil_image: Any) -> str:
        raise self._missing()

    def tag_multi(self, pil_image: Any, force_disable_ranks: bool = False) -> str:
        raise self._missing()


model = DeepDanbooru()
