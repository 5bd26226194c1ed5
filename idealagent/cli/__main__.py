"""``python -m idealagent.cli``: the same as the ``idealagent`` command."""

from idealagent.cli import main

main()
