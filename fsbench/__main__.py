"""`python -m fsbench ...` (and `torchrun -m fsbench train ...`) run the command line."""

from fsbench.cli import main

main()
