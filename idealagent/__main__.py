"""``python -m idealagent``: the ``idealagent`` command, as ``accelerate launch -m idealagent`` runs it."""

from idealagent.cli import main

if __name__ == "__main__":
    main()
