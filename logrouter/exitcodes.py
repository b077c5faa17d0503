"""Exit codes of every logrouter command (sysexits-style where one exists)."""

OK = 0
RUNTIME = 1  # broker gone, write failed, not confirmed
USAGE = 2  # bad command line (argparse's own code)
CONFIG = 78  # EX_CONFIG: systemd units set RestartPreventExitStatus=78
NO_MATCH = 1  # query: nothing matched (as grep)
