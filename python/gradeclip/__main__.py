"""``python -m gradeclip`` is the ``gradeclip`` command."""

from .cli import main

raise SystemExit(main())
