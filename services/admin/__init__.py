"""Runtime administration: people and tokens, departments, routing rules and campaigns, audited.

Not a process of its own: the admin API (:mod:`services.admin.api`) and its page are mounted by the
reporting service, whose role is the only one that writes the ``admin`` schema; every service reads it
(``SELECT`` only) and applies it without restart through :mod:`shared.admin_sync`.
"""
