"""SC vs PSC feature-loss memory and step time by batch size; the same as `ltbench bench --memory`."""

import sys

from ltbench.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--memory", *sys.argv[1:]]))
