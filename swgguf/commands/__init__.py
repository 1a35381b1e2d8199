"""The ``swgguf`` subcommands, one module each: ``configure_parser(parser)`` and
``main(args) -> int``. A command parses its flags, makes one library call
(an engine: :mod:`swgguf.detection`, :mod:`swgguf.conversion`,
:mod:`swgguf.evaluate`, :mod:`swgguf.ablation`, :mod:`swgguf.runtime`) and
renders what it returns; no engine prints."""
