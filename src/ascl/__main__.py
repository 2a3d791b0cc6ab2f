import sys

from ascl.cli import main

sys.exit(main())
