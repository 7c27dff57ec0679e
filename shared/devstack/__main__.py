"""``python -m shared.devstack run|stop|status``: the one-command local system."""

from shared.devstack.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
