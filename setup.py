"""The one thing pyproject.toml cannot declare with the setuptools this project supports:
the optional C decoder of ``roomsync.core.postcard`` (``_postcard_c.c``).

``optional=True``: without a C compiler the install still succeeds and ``decode_pack``
runs its pure-Python path (``roomsync.core.postcard.ACCELERATED`` says which one runs).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "roomsync.core._postcard_c",
            ["src/roomsync/core/_postcard_c.c"],
            optional=True,
        )
    ]
)
