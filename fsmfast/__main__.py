from fsmfast.cli import main

raise SystemExit(main())
