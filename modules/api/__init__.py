"""The A1111-compatible HTTP API (``/sdapi/v1``): ``create_api_app(runtime)`` or ``mount_api(app, runtime)``."""
from modules.api.api import Api, create_api_app, mount_api

__all__ = ["Api", "create_api_app", "mount_api"]
