from streamproc.cli import main
import sys
sys.exit(main())
