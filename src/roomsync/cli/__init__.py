"""The ``roomsync`` command line: thin commands over the library.

Not a public API: the commands and their flags are the interface (README.md, docs/);
these modules change without notice. Code that needs what a command does calls the
library it wraps.
"""
