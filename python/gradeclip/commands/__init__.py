"""One module per ``gradeclip`` subcommand (see :mod:`gradeclip.cli`), named as the subcommand.

Each is the command's shell: ``add_parser(subparsers)`` declares its flags and ``run(args) -> int``
turns them into one call of the library and prints the outcome (exit status 2 for a refused input).
The job itself lives in the library, importable without the command line: ``demo`` →
:mod:`gradeclip.demo`, ``coverage`` → :mod:`gradeclip.coverage`, ``explain`` →
:mod:`gradeclip.pipeline`, ``eval`` → :mod:`gradeclip.eval`, ``analyze`` → :mod:`gradeclip.analysis`,
``synth`` → :mod:`gradeclip.synth`, ``finetune`` → :mod:`gradeclip.finetune`.
``bench`` is the exception: measuring speed is only offered as a command, so its measurement lives
in :mod:`gradeclip.commands.bench`.
"""
