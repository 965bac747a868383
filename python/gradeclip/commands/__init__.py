"""One module per ``gradeclip`` subcommand (see :mod:`gradeclip.cli`)."""
