"""A1111 names that the app's own modules of the same name lack; served by their module ``__getattr__`` (see
``modules.a1111.install``)."""
