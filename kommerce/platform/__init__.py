"""The whole platform on one machine: what ``kommerce up``, ``status`` and ``down`` run.

``services`` is the table of services (adding one is one entry), ``launcher`` starts the
data servers and the services and waits for them, ``state`` is the file that lets a second
command find what a detached ``up`` left running, ``seed`` the demo catalog.
"""
