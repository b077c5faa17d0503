"""The app side: what an application loads with ``logrouter.RabbitHandler``.

Nothing here imports the daemon side (config, sinks, control, metrics) or the CLI;
shared pure parts (severity, wire) and ``connection`` sit below both sides.
"""
