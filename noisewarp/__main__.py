"""``python -m noisewarp method=particle res=1024``: the same as ``noisewarp-run``."""

from noisewarp.cli import main

main()
